"""All configuration, from the environment (``FINOPS_*``), in one place."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINOPS_", extra="ignore")

    # Unset: use (and if needed start) the embedded broker / PostgreSQL.
    kafka_url: str | None = None
    database_url: str | None = None
    home: Path = Field(default_factory=lambda: platformdirs.user_data_path("finops"))

    partitions: int = Field(default=6, ge=1)
    usage_topic: str = "usage"
    usage_dlq_topic: str = "usage-dlq"
    group_id: str = "finops-spend"

    # Messages per stream batch, and the wait that closes a partial batch.
    batch_messages: int = Field(default=400, ge=1)
    batch_within_s: float = Field(default=0.3, gt=0)
    # What our producers pack into one NDJSON message.
    events_per_message: int = Field(default=100, ge=1)
    max_message_bytes: int = Field(default=900_000, ge=1024)
