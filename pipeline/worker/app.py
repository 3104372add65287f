"""The faust app and its topics. Declarations only; the agents live in
``pipeline.worker.agents``, the parts are put together in
``pipeline.worker.assembly`` and the process around them in
``pipeline.worker.process``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from faust.tables import TableManager

from pipeline.settings import Settings
from pipeline.stream.bulk_intake import BulkApp
from pipeline.stream.kafka import faust_broker


@dataclass(frozen=True)
class Topics:
    usage: Any
    usage_dlq: Any
    telemetry: Any
    telemetry_dlq: Any
    cache: Any
    cache_dlq: Any
    alerts: Any


class _SilenceFirstRebalanceNoise(logging.Filter):
    """faust-streaming warns "Missing sensor state for rebalance #1" on every
    worker start (faust-streaming/faust#83, open since 2021): its rebalance
    bookkeeping loses the sensor state it keeps for rebalance timings, which
    nothing here reads. A warning on every start teaches operators to skip
    warnings, so this one is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Missing sensor state for rebalance" not in record.getMessage()


_FAUST_NOISE = _SilenceFirstRebalanceNoise()


class _NoTables(TableManager):
    """faust's table manager sleeps a second at start so that tables
    declared late can still register; this app declares none, and the
    consumer's subscription waits for the manager, so that second was a
    sixth of a worker's start-up."""

    async def on_start(self) -> None:
        await self._update_channels()
        await self.recovery.start()


def build_app(settings: Settings, kafka_url: str) -> tuple[BulkApp, Topics]:
    # The app logs under its class's module; once, however often called.
    logging.getLogger(BulkApp.__module__).addFilter(_FAUST_NOISE)
    app = BulkApp(
        settings.group_id,
        broker=faust_broker(kafka_url),
        # No faust tables: window state lives in the idempotent Postgres sink.
        store="memory://",
        TableManager=_NoTables,
        datadir=str(settings.home / "faust"),
        web_enabled=False,
        # The leader-election topic costs a topic and a rebalance step we do not use.
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        # Short sessions make a dead worker's partitions move in seconds, not
        # the 60 s default (and Tansu's joins take half a session).
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        broker_commit_interval=1.0,
        # Records a fetch hands over: each fetch is a hop to faust's consumer
        # thread and back, so a backlog of one-event messages wants many.
        broker_max_poll_records=5000,
        # The sink is idempotent, so a stop or a revocation need not wait for
        # the batches in flight (faust's default waits for their acks, and
        # forever if the database refuses them); the stages' own graceful
        # stop gives them FINOPS_SHUTDOWN_GRACE_S, and the fencing and the
        # sink's offsets keep a batch finished after a revocation exact.
        stream_wait_empty=False,
        consumer_max_fetch_size=1024**2,
        producer_max_request_size=max(1024**2, settings.max_message_bytes * 2),
        producer_compression_type=settings.kafka_compression,
        loghandlers=[],
    )

    def raw_topic(name: str) -> Any:
        # Bytes in, bytes out: decoding is the agent's job, batched.
        return app.topic(
            name,
            value_type=bytes,
            value_serializer="raw",
            key_type=bytes,
            key_serializer="raw",
            partitions=settings.partitions,
        )

    t, c = settings.telemetry_topic, settings.cache_topic
    topics = Topics(
        usage=raw_topic(settings.usage_topic),
        usage_dlq=raw_topic(settings.usage_dlq_topic),
        telemetry=raw_topic(t),
        telemetry_dlq=raw_topic(f"{t}-dlq"),
        cache=raw_topic(c),
        cache_dlq=raw_topic(f"{c}-dlq"),
        alerts=raw_topic(settings.alerts_topic),
    )
    return app, topics
