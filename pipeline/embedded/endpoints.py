"""Where the broker and database are: configured URLs, else the embedded ones."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pipeline.embedded import runtime as embedded
from pipeline.settings import Settings


@dataclass(frozen=True)
class Services:
    kafka_url: str
    database_url: str
    embedded: bool


def resolve(settings: Settings) -> Services:
    if settings.kafka_url and settings.database_url:
        return Services(settings.kafka_url, settings.database_url, embedded=False)
    started = embedded.up(settings.home)
    kafka_url = settings.kafka_url or started.kafka_url
    database_url = settings.database_url or started.database_url
    if started.fresh_broker and not settings.kafka_url:
        forget_offsets(database_url)
    return Services(kafka_url, database_url, embedded=True)


def forget_offsets(database_url: str) -> None:
    """A new embedded broker starts with empty topics at offset 0, so offsets
    the sink stored for the previous one would skip the new messages. Dedup
    keys stay: events replayed into the new broker still count once."""
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("SELECT to_regclass('sink_offset')").fetchone()
        if exists and exists[0]:
            conn.execute("DELETE FROM sink_offset")
