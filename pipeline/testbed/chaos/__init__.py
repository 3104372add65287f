"""The fault harness: real workers, real faults, a verdict against the ledger."""
