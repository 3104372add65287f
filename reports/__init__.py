"""Reports built from the windows in PostgreSQL."""
