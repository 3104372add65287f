"""Where the broker and database are: the configured URLs, else the embedded
services, started only when a command needs them."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.embedded import runtime
from pipeline.settings import Settings
from pipeline.stream.offsets import forget_offsets


@dataclass(frozen=True)
class Endpoints:
    kafka_url: str
    database_url: str
    embedded: bool


def resolve(settings: Settings) -> Endpoints:
    """Both services: the configured ones, the others embedded (and started)."""
    kafka_url, fresh = settings.kafka_url, False
    if not kafka_url:
        kafka_url, fresh = runtime.up_broker(settings.home)
    url = database_url(settings)
    if fresh:
        # A new embedded broker starts with empty topics at offset 0, so the
        # offsets stored for the previous one would skip the new messages.
        forget_offsets(url)
    return Endpoints(kafka_url, url, embedded=not (settings.kafka_url and settings.database_url))


def database_url(settings: Settings) -> str:
    """PostgreSQL alone, for the commands that need no broker."""
    return settings.database_url or runtime.up_postgres(settings.home)
