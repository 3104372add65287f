"""The fault suite: ``finops chaos`` and ``pytest -m faults``."""
