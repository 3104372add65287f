"""Month close and what finance reads: chargeback lines, forecast, invoice reconciliation."""
