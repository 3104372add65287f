"""All configuration, from the environment (``FINOPS_*``), in one place."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.storage.partitions import Horizons, horizons
from pipeline.stream.admission import Admission
from pipeline.stream.stages import StageConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINOPS_", extra="ignore")

    # Unset: use (and if needed start) the embedded broker / PostgreSQL.
    kafka_url: str | None = None
    database_url: str | None = None
    home: Path = Field(default_factory=lambda: platformdirs.user_data_path("finops"))

    partitions: int = Field(default=6, ge=1)
    usage_topic: str = "usage"
    usage_dlq_topic: str = "usage-dlq"
    # Off: the spend path alone (no telemetry or cache agents, no energy
    # attribution), for deployments without GPU telemetry and for the bench.
    joins: bool = True
    # Co-partitioned with usage (same key, node_id; same partition count).
    telemetry_topic: str = "gpu-telemetry"
    cache_topic: str = "cache-events"
    group_id: str = "finops-spend"
    # A worker silent this long leaves the group and its partitions move.
    # 6 s is the least Kafka brokers accept (group.min.session.timeout.ms);
    # Tansu holds every group join for half of it, so it is also most of a
    # worker's start-up against the embedded broker.
    session_timeout_s: float = Field(default=6.0, ge=3)
    # Alert transitions (fire, resolve) as JSON, keyed by the alert's dedup key.
    alerts_topic: str = "alerts"
    # A minute is evaluated by the rules once the newest spend window is this
    # far past its end; a re-fire within the cooldown is not re-notified.
    alert_lateness_s: float = Field(default=120, ge=0)
    alert_cooldown_s: float = Field(default=1800, ge=0)
    # Minutes older than this by the wall clock are not judged: a backfill of
    # last month's history pages nobody, and is not walked minute by minute.
    alert_max_age_s: float = Field(default=24 * 3600, gt=0)
    # Slack-compatible incoming webhook for alert notifications (a secret:
    # set it in the environment only).
    alert_webhook_url: str | None = None

    # A stream batch's bounds (messages, bytes of message values), and the
    # wait that closes a partial batch.
    batch_messages: int = Field(default=20_000, ge=1)
    batch_bytes: int = Field(default=8_000_000, ge=1)
    batch_within_s: float = Field(default=0.3, gt=0)
    # Event keys a worker remembers having committed, so a re-send among
    # them is known as a duplicate without the database (about 160 bytes of
    # memory each; an older re-send is found by the database instead).
    recent_keys: int = Field(default=250_000, ge=0)
    # What our producers pack into one NDJSON message.
    events_per_message: int = Field(default=100, ge=1)
    max_message_bytes: int = Field(default=900_000, ge=1024)
    # How our producers compress their batches ("none": not at all). NDJSON
    # shrinks 3-10x under lz4 (cache events, which repeat their keys and
    # names, the most), so the broker stores and a worker fetches that much
    # less, for the least CPU of the codecs Kafka knows.
    compression: Literal["lz4", "zstd", "gzip", "none"] = "lz4"

    # Admission bounds on event time (Stripe's meter events: 35 days back, 5
    # minutes ahead); events outside are dead-lettered and can be replayed.
    max_event_age_days: float = Field(default=35, gt=0)
    max_future_s: float = Field(default=300, ge=0)
    # Minute spend windows older than this many months (besides the current
    # one) are dropped by retention; the hourly and daily roll-ups keep every
    # amount. Unset: minutes are kept for ever. seen_event keeps the days an
    # admitted event can have (max_event_age_days + max_future_s, and a day).
    minute_retention_months: int | None = Field(default=None, ge=1)

    # On SIGTERM, how long batches already taken may take to commit.
    shutdown_grace_s: float = Field(default=10, ge=0)
    # `worker --drain` gives up (exit 75) when no sink has advanced this long:
    # a dead broker or a sink that keeps failing must not make a backfill
    # wait forever (waiting for PostgreSQL itself does not count).
    drain_stall_s: float = Field(default=300, gt=0)

    # The pages: plain-HTTP cookies for development only; the API docs
    # without a token; how long a login lasts.
    web_insecure_cookies: bool = False
    web_public_docs: bool = False
    web_session_hours: float = Field(default=12, gt=0)

    # The front door (`finops ingest serve`): the largest request body; the
    # most lines waiting for the broker before requests get 429; how long a
    # line waits for others of its node key; how long a request waits for
    # the broker's acks before it gets 503; where identity comes from
    # (unset: the mapping that ships, pipeline/ingest/mapping.yaml).
    ingest_max_body_bytes: int = Field(default=8 * 1024**2, ge=1024)
    ingest_max_items: int = Field(default=10_000, ge=1)  # per request (413 beyond)
    ingest_max_pending: int = Field(default=50_000, ge=1)
    ingest_linger_s: float = Field(default=0.05, ge=0)
    ingest_ack_timeout_s: float = Field(default=30, gt=0)
    ingest_mapping: Path | None = None

    # Prometheus metrics of `finops worker`, `finops ingest serve` and
    # `finops serve` (unset: not served). The host is loopback unless a
    # scraper elsewhere must reach it (the compose file says 0.0.0.0).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    # A node-window's energy is split once its telemetry has covered it, or
    # this long after it ended.
    energy_finalize_after_s: float = Field(default=300, ge=0)

    @property
    def kafka_compression(self) -> str | None:
        """``compression`` as Kafka clients name it (None: uncompressed)."""
        return None if self.compression == "none" else self.compression

    @property
    def side_topics(self) -> tuple[str, ...]:
        """The joined topics and their dead-letter topics."""
        t, c = self.telemetry_topic, self.cache_topic
        return (t, f"{t}-dlq", c, f"{c}-dlq")

    @property
    def stages(self) -> StageConfig:
        return StageConfig(
            self.batch_messages, self.batch_within_s, self.shutdown_grace_s, self.batch_bytes
        )

    def horizons(self, now: datetime) -> Horizons:
        """What retention keeps at ``now``."""
        return horizons(
            now,
            timedelta(days=self.max_event_age_days),
            timedelta(seconds=self.max_future_s),
            self.minute_retention_months,
        )

    def admission(self, now: datetime) -> Admission:
        return Admission(
            now=now,
            max_age=timedelta(days=self.max_event_age_days),
            max_future=timedelta(seconds=self.max_future_s),
            max_message_bytes=self.max_message_bytes,
        )
