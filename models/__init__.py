"""Wire contracts, reference data and money rules. Nothing in this package does I/O."""
