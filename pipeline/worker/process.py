"""A faust worker process running the spend agent.

``drain=True`` (``finops worker --drain``) snapshots the end offsets of the
usage topic at start, runs until the sink has committed every partition up
to them, then stops cleanly and exits 0: a backfill or a test, not a service.
A drain that stops before that (stalled, or told to by SIGTERM or SIGINT)
exits 75 instead, so no caller mistakes it for caught up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust

from pipeline.alerts.evaluator import evaluate
from pipeline.alerts.webhook import Webhook
from pipeline.cache.sink import CacheSink
from pipeline.energy.finalizer import EnergyFinalizer
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.settings import Settings
from pipeline.spend.price_store import reprice
from pipeline.spend.sink import SpendSink
from pipeline.storage.db import engine
from pipeline.stream.kafka import end_offsets, ensure_topics
from pipeline.stream.offsets import OffsetSink
from pipeline.stream.stages import StageClock
from pipeline.worker.agents import AgentStats, ReferenceData, attach_spend_agent, stats_json
from pipeline.worker.app import build_app
from pipeline.worker.line_agents import attach_line_agent
from pipeline.worker.stop_signal import DRAIN_UNFINISHED, exit_cleanly_on_sigterm, held

log = logging.getLogger(__name__)

# Test-only: "POINT:N" SIGKILLs this worker the Nth time it reaches POINT
# (before_commit or after_commit), to prove recovery at exact fault points.
CRASH_ENV = "FINOPS_TEST_CRASH_AT"
# Test-only: seconds the claim waits on assignment, widening the window in
# which faust already delivers the new partitions' messages.
CLAIM_DELAY_ENV = "FINOPS_TEST_CLAIM_DELAY_S"


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


def run_worker(
    settings: Settings,
    kafka_url: str,
    database_url: str,
    *,
    drain: bool = False,
    stats_file: Path | None = None,
    loglevel: str = "warning",
) -> int:
    topic = settings.usage_topic
    settings.home.mkdir(parents=True, exist_ok=True)  # faust keeps its data dir there
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
    app, topics = build_app(settings, kafka_url)
    sink = SpendSink(database_url, topic)
    stats = AgentStats()
    db = engine(database_url)

    async def reprice_now() -> None:
        result = await asyncio.to_thread(reprice, db)
        if result.events:
            log.warning("repriced %d events (+%s USD)", result.events, result.cost_usd)

    prices_reader = SpendSink(database_url, topic)
    prices = ReferenceData(prices_reader, reprice_now)
    attach_spend_agent(app, topics, settings, sink, prices, stats, crash_hook())
    sinks: list[OffsetSink] = [sink]
    if settings.joins:
        telemetry = TelemetrySink(database_url, settings.telemetry_topic)
        cache = CacheSink(database_url, settings.cache_topic)
        for name, side_topic, side_dlq, side_sink in (
            ("telemetry", topics.telemetry, topics.telemetry_dlq, telemetry),
            ("cache", topics.cache, topics.cache_dlq, cache),
        ):
            clock = stats.stages.setdefault(name, StageClock())
            attach_line_agent(app, name, side_topic, side_dlq, side_sink, settings, clock)
        sinks += [telemetry, cache]
        finalizer = EnergyFinalizer(
            database_url, timedelta(seconds=settings.energy_finalize_after_s)
        )

        @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
        async def split_energy() -> None:
            await finalizer.run()

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

    lateness = timedelta(seconds=settings.alert_lateness_s)
    cooldown = timedelta(seconds=settings.alert_cooldown_s)
    max_age = timedelta(seconds=settings.alert_max_age_s)

    async def evaluate_rules(limit: int, *, wait: bool = False) -> None:
        # The rules must never stop the stream: a failure is a fault, retried
        # on the next tick from the same watermark.
        try:
            published = await asyncio.to_thread(
                evaluate,
                db,
                lateness=lateness,
                cooldown=cooldown,
                limit=limit,
                max_age=max_age,
                wait=wait,
            )
        except Exception:
            log.exception("fault alert_evaluation")
            return
        for message in published:
            await topics.alerts.send(key=message.key, value=message.value)
            body = json.loads(message.value)
            if webhook is not None and body["notify"]:
                webhook.offer(body)

    webhook = Webhook(settings.alert_webhook_url) if settings.alert_webhook_url else None
    if webhook is not None:
        app.task(webhook.run)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def run_rules() -> None:
        await evaluate_rules(limit=60)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)

    def write_stats() -> None:
        if stats_file is not None:
            stats_file.write_text(stats_json(stats, sink.faults + prices_reader.faults))

    stopping: set[asyncio.Future[None]] = set()
    stalled = asyncio.Event()
    if drain:
        # Own connections, so polling never waits behind a commit.
        watched: list[tuple[OffsetSink, dict[int, int]]] = [
            (SpendSink(database_url, topic), targets[topic])
        ]
        if settings.joins:
            t, c = settings.telemetry_topic, settings.cache_topic
            watched += [
                (TelemetrySink(database_url, t), targets[t]),
                (CacheSink(database_url, c), targets[c]),
            ]

        def stall(why: str) -> None:
            log.error(
                "drain stalled: %s for %.0f s; exiting %d",
                why,
                settings.drain_stall_s,
                DRAIN_UNFINISHED,
            )
            stalled.set()
            stopping.add(asyncio.ensure_future(worker.stop()))

        @app.task  # type: ignore[untyped-decorator]
        async def watch_drain() -> None:
            last, since = -1, time.monotonic()
            while True:
                polled = time.monotonic()
                applied = [await s.applied() for s, _ in watched]
                if all(
                    all(done.get(p, 0) >= end for p, end in targets.items())
                    for done, (_, targets) in zip(applied, watched, strict=True)
                ):
                    break
                total, now = sum(sum(done.values()) for done in applied), time.monotonic()
                # Any sink advancing is progress, and so is a poll that had to
                # wait for the database (the sinks wait out an outage by
                # design); nothing else for the stall limit ends the drain.
                if total != last or now - polled > 5:
                    last, since = total, now
                elif now - since > settings.drain_stall_s:
                    return stall("no sink advanced")
                await asyncio.sleep(0.2)
            # A drain is a backfill: no more telemetry will come, so split
            # every window now rather than after the timeout.
            backfill = EnergyFinalizer(database_url, timedelta(0))
            try:
                split = not settings.joins or await backfill.split_all(settings.drain_stall_s)
            finally:
                await backfill.close()
            if not split:
                return stall("the energy split kept failing")
            # Every minute the drain closed, after the timer's evaluation
            # if one is under way (skipping it would leave minutes unjudged).
            await evaluate_rules(limit=100_000, wait=True)
            if webhook is not None:
                await webhook.flush(timeout_s=60)
            log.info("drained %s", [t for _, t in watched])
            stats.drained_at = time.time()
            stats.last_commit_at = stats.last_commit_at or stats.drained_at
            write_stats()
            stopping.add(asyncio.ensure_future(worker.stop()))

    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    else:  # pragma: no cover - execute_from_commandline always exits
        code = 0
    unfinished = drain and stats.drained_at is None  # stalled, or told to stop
    # Closing faust's loop put the default back.
    exit_cleanly_on_sigterm(DRAIN_UNFINISHED if unfinished else 0)
    with held():  # a second SIGTERM now waits for the stats file
        write_stats()
    db.dispose()
    if stalled.is_set():
        # A stage still retrying its sink can keep faust's consumer thread
        # alive after the stop; nothing uncommitted was acked, so go now.
        logging.shutdown()
        os._exit(DRAIN_UNFINISHED)
    return DRAIN_UNFINISHED if unfinished and code == 0 else code
