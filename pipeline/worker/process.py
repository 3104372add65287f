"""A worker process: topics, the assembled parts, faust's worker, and the
exit-code protocol.

``drain=True`` (``finops worker --drain``) snapshots the end offsets of the
joined topics at start and runs until they are applied (:mod:`.drain`),
then stops cleanly and exits 0: a backfill or a test, not a service. A drain
that stops before that (stalled, or told to by SIGTERM or SIGINT) exits
:data:`DRAIN_UNFINISHED` instead, so no caller mistakes it for caught up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import faust

from pipeline.cache.sink import CacheSink
from pipeline.energy.finalizer import EnergyFinalizer
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.settings import Settings
from pipeline.spend.sink import SpendSink
from pipeline.stream import live_metrics
from pipeline.stream.kafka import end_offsets, ensure_topics
from pipeline.stream.offsets import OffsetSink
from pipeline.worker.assembly import Assembly, assemble
from pipeline.worker.drain import DrainProgress, drain
from pipeline.worker.stats import stats_json
from pipeline.worker.stop_signal import DRAIN_UNFINISHED, exit_cleanly_on_sigterm, held

log = logging.getLogger(__name__)


def exit_code(*, drain: bool, drained: bool, faust_code: int) -> int:
    """The process's status: faust's, except that a drain which did not
    catch up never exits 0."""
    return DRAIN_UNFINISHED if drain and not drained and faust_code == 0 else faust_code


def run_worker(
    settings: Settings,
    kafka_url: str,
    database_url: str,
    *,
    drain: bool = False,
    stats_file: Path | None = None,
    loglevel: str = "warning",
) -> int:
    settings.home.mkdir(parents=True, exist_ok=True)  # faust keeps its data dir there
    topic = settings.usage_topic
    asyncio.run(
        ensure_topics(
            kafka_url,
            [topic, settings.usage_dlq_topic, *settings.side_topics, settings.alerts_topic],
            settings.partitions,
        )
    )
    joined = (topic, settings.telemetry_topic, settings.cache_topic) if settings.joins else (topic,)
    targets = {t: asyncio.run(end_offsets(kafka_url, t)) for t in joined} if drain else {}

    # asyncio.run() above leaves no current loop; faust and mode want one.
    asyncio.set_event_loop(asyncio.new_event_loop())
    parts = assemble(settings, kafka_url, database_url)
    live_metrics.serve(settings.metrics_port, settings.metrics_host)
    worker = faust.Worker(parts.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)

    def write_stats() -> None:
        if stats_file is not None:
            stats_file.write_text(stats_json(parts.stats, parts.faults))

    stalled = (
        _attach_drain(parts, worker, settings, database_url, targets, write_stats)
        if drain
        else None
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:  # pragma: no cover - execute_from_commandline always exits
        code = 0
    drained = parts.stats.drained_at is not None
    # Closing faust's loop put the default back.
    exit_cleanly_on_sigterm(exit_code(drain=drain, drained=drained, faust_code=0))
    with held():  # a second SIGTERM now waits for the stats file
        write_stats()
    parts.engine.dispose()
    if stalled is not None and stalled.is_set():
        # A stage still retrying its sink can keep faust's consumer thread
        # alive after the stop; nothing uncommitted was acked, so go now.
        logging.shutdown()
        os._exit(DRAIN_UNFINISHED)
    return exit_code(drain=drain, drained=drained, faust_code=code)


def _attach_drain(
    parts: Assembly,
    worker: faust.Worker,
    settings: Settings,
    database_url: str,
    targets: dict[str, dict[int, int]],
    write_stats: Callable[[], None],
) -> asyncio.Event:
    """The drain as a task of the app; the event is set if it stalled."""
    stalled = asyncio.Event()
    stopping: set[asyncio.Future[None]] = set()
    # Own connections, so polling never waits behind a commit.
    watched: list[OffsetSink] = [SpendSink(database_url, settings.usage_topic)]
    if settings.joins:
        watched += [
            TelemetrySink(database_url, settings.telemetry_topic),
            CacheSink(database_url, settings.cache_topic),
        ]

    async def finish() -> bool:
        # A drain is a backfill: no more telemetry will come, so split
        # every window now rather than after the timeout.
        if settings.joins:
            backfill = EnergyFinalizer(database_url, timedelta(0))
            try:
                if not await backfill.split_all(settings.drain_stall_s):
                    return False
            finally:
                await backfill.close()
        # Every minute the drain closed, after the timer's evaluation if one
        # is under way (skipping it would leave minutes unjudged).
        await parts.rules.evaluate(limit=100_000, wait=True)
        await parts.rules.flush()
        return True

    @parts.app.task  # type: ignore[untyped-decorator]
    async def watch_drain() -> None:
        progress = DrainProgress([targets[s.topic] for s in watched], settings.drain_stall_s)
        end = await drain([s.applied for s in watched], progress, finish)
        if end.drained:
            log.info("drained %s", [targets[s.topic] for s in watched])
            parts.stats.drained_at = time.time()
            parts.stats.last_commit_at = parts.stats.last_commit_at or parts.stats.drained_at
            write_stats()
        else:
            log.error(
                "drain stalled: %s for %.0f s; exiting %d",
                end.why,
                settings.drain_stall_s,
                DRAIN_UNFINISHED,
            )
            stalled.set()
        stopping.add(asyncio.ensure_future(worker.stop()))

    return stalled
