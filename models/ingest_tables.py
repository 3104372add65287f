"""Who may publish through the front door (``finops ingest serve``): ingest
keys by their SHA-256, each for a named source and optionally bound to one
tenant."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Identity, Table, Text, func

from models.schema import TS, metadata

ingest_key = Table(
    "ingest_key",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("key_sha256", Text, nullable=False, unique=True),
    Column("source", Text, nullable=False),
    # NULL: the key may publish any tenant's usage.
    Column("tenant", Text, nullable=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("last_used_at", TS, nullable=True),
    Column("revoked_at", TS, nullable=True),
)
