"""The kernel every agent shares: messages and NDJSON decoding, the three
stages, the one offset transaction, dead letters, PostgreSQL and Kafka
plumbing. Imports only models and settings.
"""
