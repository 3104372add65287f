"""Ingest keys: who may publish through the front door.

A key is a random secret shown once; only its SHA-256 is stored. A key names
its source (``litellm-prod``, ``otel-collector``) and may be bound to one
tenant, in which case every event it publishes must be that tenant's.
Lookups are cached for a few seconds (``KeyCache``), so a busy gateway costs
one query per key per interval, not per request; a revoked key stops
working within that interval.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Engine, text

PREFIX: Final = "fik_"


@dataclass(frozen=True)
class IngestKey:
    id: int
    source: str
    tenant: str | None  # None: any tenant


@dataclass(frozen=True)
class KeyInfo:
    id: int
    source: str
    tenant: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(engine: Engine, source: str, tenant: str | None) -> tuple[int, str]:
    """A new key: its id and the secret, which is not stored."""
    secret = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        key_id = conn.execute(
            text(
                "INSERT INTO ingest_key (key_sha256, source, tenant) VALUES (:h, :s, :t)"
                " RETURNING id"
            ),
            {"h": digest(secret), "s": source, "t": tenant},
        ).scalar_one()
    return int(key_id), secret


def revoke_key(engine: Engine, key_id: int) -> bool:
    with engine.begin() as conn:
        done = conn.execute(
            text("UPDATE ingest_key SET revoked_at = now() WHERE id = :i AND revoked_at IS NULL"),
            {"i": key_id},
        ).rowcount
    return bool(done)


def list_keys(engine: Engine) -> list[KeyInfo]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, source, tenant, created_at, last_used_at, revoked_at"
                " FROM ingest_key ORDER BY id"
            )
        ).all()
    return [KeyInfo(*row) for row in rows]


def lookup(engine: Engine, secret: str) -> IngestKey | None:
    """The live key with this secret, or None; marks it used."""
    if not secret.startswith(PREFIX) or len(secret) > 100:
        return None
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE ingest_key SET last_used_at = now()"
                " WHERE key_sha256 = :h AND revoked_at IS NULL RETURNING id, source, tenant"
            ),
            {"h": digest(secret)},
        ).first()
    return None if row is None else IngestKey(int(row[0]), str(row[1]), row[2])


class KeyCache:
    """:func:`lookup` remembered for ``ttl_s`` per secret digest (misses
    too, so a flood of bad keys costs one query per key and interval)."""

    def __init__(self, engine: Engine, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self._engine = engine
        self._ttl = ttl_s
        self._max = max_entries
        self._seen: dict[str, tuple[float, IngestKey | None]] = {}

    def get(self, secret: str) -> IngestKey | None:
        now = time.monotonic()
        h = digest(secret)
        hit = self._seen.get(h)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        key = lookup(self._engine, secret)
        if len(self._seen) >= self._max:
            self._seen.clear()
        self._seen[h] = (now, key)
        return key
