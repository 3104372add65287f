"""The embedded default: a Kafka-compatible broker and PostgreSQL from PyPI,
started as child processes.
"""
