"""Stream processing, I/O adapters and the command line."""
