"""A worker's parts, put together: the faust app and its topics, one sink
per topic (each publishing its dead letters to its dead-letter topic), the
agents, the partition claims, the energy split and the rules on timers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from sqlalchemy import Engine

from pipeline.cache.sink import CacheSink
from pipeline.energy.finalizer import EnergyFinalizer
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.settings import Settings
from pipeline.spend.price_store import reprice
from pipeline.spend.reference import ReferenceData, ReferenceReader
from pipeline.spend.sink import SpendSink
from pipeline.storage import db, retention
from pipeline.stream.bulk_intake import BulkApp
from pipeline.stream.offsets import OffsetSink
from pipeline.stream.pg import PgSession
from pipeline.stream.stages import StageClock
from pipeline.worker import metrics
from pipeline.worker.agents import attach_line_agent, attach_spend_agent, dead_letter_topic
from pipeline.worker.alerting import RuleRunner
from pipeline.worker.app import Topics, build_app
from pipeline.worker.stats import AgentStats

log = logging.getLogger(__name__)

# Test-only: "POINT:N" SIGKILLs this worker the Nth time it reaches POINT
# (before_commit or after_commit), to prove recovery at exact fault points.
CRASH_ENV = "FINOPS_TEST_CRASH_AT"
# Test-only: seconds the claim waits on assignment, widening the window in
# which faust already delivers the new partitions' messages.
CLAIM_DELAY_ENV = "FINOPS_TEST_CLAIM_DELAY_S"
# How often a worker makes the coming partitions and drops those past their
# horizon (pipeline/storage/retention.py); and once as it starts.
RETENTION_EVERY_S = 3600.0


@dataclass
class Assembly:
    app: BulkApp
    topics: Topics
    sinks: list[OffsetSink]  # spend first, then the joined topics'
    sessions: list[PgSession]  # every connection whose faults the stats report
    rules: RuleRunner
    engine: Engine
    stats: AgentStats = field(default_factory=AgentStats)

    @property
    def faults(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for s in self.sessions:
            for kind, n in s.faults.items():
                total[kind] = total.get(kind, 0) + n
        return total


def crash_hook() -> Callable[[str], None]:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return lambda point: None
    target, _, nth = spec.partition(":")
    remaining = {target: int(nth or 1)}

    def hook(point: str) -> None:
        if point in remaining:
            remaining[point] -= 1
            if remaining[point] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def assemble(settings: Settings, kafka_url: str, database_url: str) -> Assembly:
    app, topics = build_app(settings, kafka_url)
    engine = db.engine(database_url)
    spend = SpendSink(
        database_url,
        settings.usage_topic,
        recent_keys=settings.recent_keys,
        publish_dead=dead_letter_topic(topics.usage_dlq),
    )

    async def reprice_now() -> None:
        result = await asyncio.to_thread(reprice, engine)
        if result.events:
            log.warning("repriced %d events (+%s USD)", result.events, result.cost_usd)

    reader = ReferenceReader(database_url)
    reference = ReferenceData(reader, reprice_now)
    parts = Assembly(
        app, topics, [spend], [spend, reader], RuleRunner(settings, engine, topics.alerts), engine
    )
    attach_spend_agent(app, topics.usage, settings, spend, reference, parts.stats, crash_hook())
    if settings.joins:
        _join_side_topics(parts, settings, database_url)
    _claim_on_assignment(app, parts.sinks)
    if parts.rules.webhook is not None:
        app.task(parts.rules.webhook.run)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def run_rules() -> None:
        await parts.rules.evaluate(limit=60)

    @app.task  # type: ignore[untyped-decorator]
    async def keep_storage_bounded() -> None:
        while True:
            await asyncio.to_thread(_retention, settings, engine)
            await asyncio.sleep(RETENTION_EVERY_S)

    metrics.attach(app, parts.sinks, engine, lambda: parts.faults)
    return parts


def _retention(settings: Settings, engine: Engine) -> None:
    now = datetime.now(UTC)
    try:
        retention.run(engine, settings.horizons(now), now)
    except Exception:  # another worker's at the same moment, or PostgreSQL is away
        log.warning("retention did not finish; again in an hour", exc_info=True)


def _join_side_topics(parts: Assembly, settings: Settings, database_url: str) -> None:
    topics = parts.topics
    telemetry = TelemetrySink(
        database_url,
        settings.telemetry_topic,
        publish_dead=dead_letter_topic(topics.telemetry_dlq),
    )
    cache = CacheSink(
        database_url, settings.cache_topic, publish_dead=dead_letter_topic(topics.cache_dlq)
    )
    for name, topic, sink in (
        ("telemetry", topics.telemetry, telemetry),
        ("cache", topics.cache, cache),
    ):
        clock = parts.stats.stages.setdefault(name, StageClock(name))
        attach_line_agent(parts.app, topic, sink, settings, clock)
    finalizer = EnergyFinalizer(database_url, timedelta(seconds=settings.energy_finalize_after_s))
    parts.sinks += [telemetry, cache]
    parts.sessions += [telemetry, cache, finalizer]

    @parts.app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def split_energy() -> None:
        await finalizer.run()


def _claim_on_assignment(app: faust.App, sinks: list[OffsetSink]) -> None:
    claim_delay_s = float(os.environ.get(CLAIM_DELAY_ENV, 0))

    @app.on_partitions_assigned.connect
    async def claim(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # From now on a previous owner is fenced. faust may resume fetching
        # before this returns: every sink learns of its partitions before the
        # first claim awaits, and their batches wait for the claim.
        (assigned,) = args
        mine = [(s, [tp.partition for tp in assigned if tp.topic == s.topic]) for s in sinks]
        for s, partitions in mine:
            s.expect(partitions)
        if claim_delay_s:
            await asyncio.sleep(claim_delay_s)
        for s, partitions in mine:
            await s.claim(partitions)
