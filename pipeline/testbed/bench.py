"""``finops bench``: the pipeline against a raw consumer, same events, same run.

For each shape the same N simulated usage events go to fresh topics:

- ``batched``: NDJSON messages of 100 events, the spend path alone
  (``FINOPS_JOINS=false``: no telemetry or cache agents, no energy split);
- ``joined``: the same, plus the GPU telemetry and cache events that go with
  that traffic on their co-partitioned topics, with every join on, as the
  simulator's producers send them by default: cache nodes send per-minute
  counters (cache events with ``count``); side traffic goes in messages of
  the same size in bytes as the usage messages;
- ``per-op``: as ``joined``, but one cache event per operation
  (``finops simulate --cache-per-op``): the same windows from about fifteen
  times the cache lines (a cache event is about 190 bytes, a usage event 450,
  so about 240 cache events a message);
- ``single``: one event per message, the spend path alone.

The baseline is a raw aiokafka consumer that reads every message of the
shape's topics and ``json.loads`` every line; the pipeline is ``finops worker
--drain`` (validation, dedup, pricing, windows, energy and cache attribution,
Postgres commits) into a fresh database. Rates are usage events per second,
timed from the first message to the end (the pipeline: every topic applied
and every energy window split); start-up (group join) is reported apart,
because it does not scale with N. ``joined`` / ``batched`` pipeline rates is
the cost of the joins (and ``per-op`` / ``batched`` their cost with one cache
event per operation). Lines per second counts every input line of the shape
(usage, telemetry and cache), the work the joined pipeline really does.
A second table shows how long each agent's prepare and commit stages were
busy, as a share of the drain: the stage near 100% is the one that sets the
pace (summed over the workers). ``workers`` runs that many worker processes
in one consumer group over the same topics, and a third table gives the CPU
seconds per million usage events of the workers, PostgreSQL and the broker
(read from /proc when they are the embedded ones). ``rounds`` measures every
shape that many times, interleaved (batched, joined, batched, joined, ...),
and reports the median ratio and each round's:
these machines are shared, and a single pair of runs can differ by a fifth.
Last, for the spend-path shapes (``batched``, ``single``), one live worker
takes a steady load at half the pipeline rate just measured for ``paced_s``
seconds, and a fourth table gives its freshness, event time to committed
window, from the worker's own histogram (:mod:`.freshness`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any, Final

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from pipeline.embedded import runtime
from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.stream.kafka import bootstrap, delete_topics, end_offsets, ensure_topics
from pipeline.stream.producer import BatchingPublisher
from pipeline.testbed import freshness
from pipeline.testbed.cpu import RssSampler, postmaster_pid, tree_cpu_s
from pipeline.testbed.simulate import side as simulate_side
from pipeline.testbed.simulate.usage import SimConfig, generate

SHAPES = {"batched": 100, "joined": 100, "per-op": 100, "single": 1}
# The shapes with the joins on, and whether their cache nodes send
# per-minute counters (True) or one event per operation.
JOINED: Final = {"joined": True, "per-op": False}


@dataclass(frozen=True)
class Run:
    events: int
    seconds: float
    startup_s: float
    # The pipeline's agents: name -> the worker's StageClock fields (summed
    # over the workers).
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    # The pipeline's CPU seconds: "worker" (all of them), "postgres" and
    # "broker" (when embedded, so their processes are known).
    cpu: dict[str, float] = field(default_factory=dict)
    # The workers' resident memory: its peak, and its growth over the
    # second half of the drain (flat memory grows by about nothing).
    rss_peak_mb: float = 0.0
    rss_growth_mb: float = 0.0
    rss: tuple[float, ...] = ()  # the samples, every 0.5 s

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


async def raw_consume(kafka_url: str, topics: list[str]) -> Run:
    """The baseline: read everything, json.loads every line, nothing else.
    Counts the lines of the first topic (usage) as its events; its CPU is
    this process's."""
    t0, cpu0 = time.time(), time.process_time()
    ends = {t: await end_offsets(kafka_url, t) for t in topics}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(kafka_url),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024**2,
    )
    await consumer.start()
    tps = [TopicPartition(t, p) for t in topics for p in ends[t]]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    remaining = {tp: ends[tp.topic][tp.partition] for tp in tps if ends[tp.topic][tp.partition]}
    events = 0
    first = None
    loads = json.loads
    try:
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batches.items():
                if first is None:
                    first = time.time()
                usage = tp.topic == topics[0]
                for r in records:
                    for line in (r.value or b"").split(b"\n"):
                        if line:
                            loads(line)
                            events += usage
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
    finally:
        await consumer.stop()
    done = time.time()
    cpu = {"raw": time.process_time() - cpu0}
    return Run(events, done - (first or done), (first or done) - t0, cpu=cpu)


@contextmanager
def database(database_url: str, topic: str) -> Iterator[str]:
    """A fresh database for one measurement, migrated and with the default
    prices, dropped after."""
    from pipeline.spend.price_store import default_prices, load_entries

    name = f"finops_bench_{topic.removeprefix('bench-').replace('-', '_')}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = db.with_database(database_url, name)
        db.upgrade(url)
        load_entries(db.engine(url), default_prices(), "default")
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def topics_of(topic: str) -> list[str]:
    """Every topic a worker on usage topic ``topic`` reads or writes: its
    side topics even when its joins are off, and their dead letters."""
    topics = [topic, *(f"{topic}-{k}" for k in ("telemetry", "cache"))]
    return topics + [f"{t}-dlq" for t in topics]


def _worker_env(
    settings: Settings, found: Endpoints, topic: str, database_url: str, joins: bool
) -> dict[str, str]:
    return {
        **os.environ,
        "FINOPS_KAFKA_URL": found.kafka_url,
        "FINOPS_DATABASE_URL": database_url,
        "FINOPS_USAGE_TOPIC": topic,
        "FINOPS_USAGE_DLQ_TOPIC": f"{topic}-dlq",
        "FINOPS_TELEMETRY_TOPIC": f"{topic}-telemetry",
        "FINOPS_CACHE_TOPIC": f"{topic}-cache",
        "FINOPS_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "FINOPS_PARTITIONS": str(settings.partitions),
        "FINOPS_JOINS": str(joins).lower(),
    }


def pipeline_drain(
    settings: Settings,
    found: Endpoints,
    topic: str,
    database_url: str,
    joins: bool,
    workers: int = 1,
) -> Run:
    """``workers`` ``finops worker --drain`` processes in one consumer group;
    each stops once every partition is applied, whoever applied it."""
    watched = _service_pids(settings) if found.embedded else {}
    with tempfile.TemporaryDirectory() as tmp:
        env = _worker_env(settings, found, topic, database_url, joins)
        files = [Path(tmp) / f"stats-{i}.json" for i in range(workers)]
        before = {name: tree_cpu_s(pid) for name, pid in watched.items()}
        t0 = time.time()
        command = [sys.executable, "-m", "pipeline.cli", "worker", "--drain", "--stats-file"]
        procs = [subprocess.Popen([*command, str(f)], env=env) for f in files]
        rss = RssSampler([p.pid for p in procs])
        try:
            cpu = {"worker": sum(_wait(p) for p in procs)}
        finally:
            rss.stop()
        time.sleep(1.0)  # the workers' backends end after them; then they count
        for name, pid in watched.items():
            start, end = before[name], tree_cpu_s(pid)
            if start is not None and end is not None:
                cpu[name] = end - start
        stats = [json.loads(f.read_text()) for f in files]
    first = min(s["first_message_at"] for s in stats if s["first_message_at"] is not None)
    last = max(s["drained_at"] for s in stats)
    stages: dict[str, dict[str, float]] = {}
    for s in stats:
        for agent, clock in s["stages"].items():
            into = stages.setdefault(agent, {})
            for k, v in clock.items():
                if isinstance(v, int | float):
                    into[k] = into.get(k, 0) + v
    return Run(
        sum(s["accepted"] for s in stats),
        last - first,
        first - t0,
        stages,
        cpu,
        rss.peak_mb,
        rss.second_half_growth_mb,
        tuple(rss.samples),
    )


def _service_pids(settings: Settings) -> dict[str, int | None]:
    state = runtime.load_state(settings.home)
    pgdata = Path(state.pgdata) if state.pgdata else settings.home / "pgdata"
    return {"postgres": postmaster_pid(pgdata), "broker": state.broker_pid}


def _wait(proc: subprocess.Popen[bytes]) -> float:
    """Wait for a worker; its CPU seconds (it must exit 0)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args)
    return usage.ru_utime + usage.ru_stime


def _busy(seconds: float, of: float) -> str:
    return f"{seconds:.1f} s ({seconds / of:.0%})" if of > 0 else f"{seconds:.1f} s"


def advance(progress: Progress, task: TaskID, completed: int) -> None:
    progress.update(task, completed=completed)


def run_bench(
    settings: Settings,
    found: Endpoints,
    n: int,
    shapes: tuple[str, ...],
    console: Console,
    rounds: int = 1,
    workers: int = 1,
    paced_s: float = 15.0,
) -> None:
    run_id = uuid.uuid4().hex[:8]
    console.print(f"generating {n:,} simulated events ...")
    # Event time ends about now: the stream admits events up to 35 days old.
    rate = 200.0
    cfg = SimConfig(
        start=datetime.now(UTC) - timedelta(seconds=n / rate),
        duration_s=10**9,
        rate=rate,
        seed=20251103,
        max_events=n,
    )
    usage = list(generate(cfg))
    events = list(simulate_side.lines(iter(usage)))
    sides: dict[str, dict[str, list[bytes]]] = {}
    # The joined shapes share one telemetry and one cache traffic: generated once.
    joined = [shape for shape in shapes if shape in JOINED]
    telemetry = list(simulate_side.lines(simulate_side.telemetry(usage, cfg))) if joined else []
    cache = list(simulate_side.cache_events(usage, cfg)) if joined else []
    for shape in joined:
        sides[shape] = {
            "telemetry": telemetry,
            "cache": list(
                simulate_side.lines(simulate_side.counters(cache) if JOINED[shape] else iter(cache))
            ),
        }
        console.print(
            f"side traffic for the {shape} shape: "
            + ", ".join(f"{len(v):,} {k} lines" for k, v in sides[shape].items())
        )
    table = Table(
        "shape",
        "usage events",
        "messages",
        "raw events/s",
        "pipeline events/s",
        "pipeline lines/s",
        "pipeline/raw",
        "raw start-up s",
        "pipeline start-up s",
        title=(
            f"finops bench, {n:,} usage events per shape, {workers} worker"
            f"{'s' if workers > 1 else ''}, {os.cpu_count()} cores"
        ),
    )
    cpu = Table(
        "shape",
        "workers",
        "raw consumer CPU s / M",
        "worker CPU s / M events",
        "PostgreSQL CPU s / M",
        "broker CPU s / M",
        "worker RSS peak MB",
        "RSS growth, 2nd half MB",
        title=(
            "CPU seconds per million usage events, per process kind (the pipeline's drain),"
            " and the workers' memory"
        ),
    )
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    busy = Table(
        "shape",
        "agent",
        "batches",
        "messages",
        "prepare busy",
        "commit busy",
        title="where the pipeline's time went (stage busy time, share of the drain)",
    )
    fresh = Table(
        "shape",
        "paced events/s",
        "events",
        "freshness p50 s",
        "freshness p99 s",
        "all within s",
        "p99 under 1 s",
        title=(
            "event time to committed window under a steady load at half the pipeline's rate"
            " (one live worker)"
        ),
    )
    # Rounds interleave the shapes (batched, joined, batched, joined, ...) so
    # a machine that slows down or speeds up mid-run biases no shape.
    for round_no in range(1, rounds + 1):
        for shape in shapes:
            label = shape if rounds == 1 else f"{shape} #{round_no}"
            console.print(f"[{label}] publishing, then the raw consumer and the pipeline ...")
            raw, pipe, messages, lines = _measure(
                settings,
                found,
                console,
                f"bench-{run_id}-{shape}-{round_no}",
                shape,
                events,
                sides.get(shape, {}),
                workers,
            )
            if raw.events != n or pipe.events != n:
                raise RuntimeError(
                    f"{shape}: expected {n} events, raw saw {raw.events}, "
                    f"pipeline counted {pipe.events}"
                )
            ratios.setdefault(shape, []).append(pipe.rate / raw.rate)
            rates.setdefault(shape, []).append(pipe.rate)
            for agent, clock in pipe.stages.items():
                if clock["batches"]:
                    busy.add_row(
                        label,
                        agent,
                        f"{clock['batches']:,}",
                        f"{clock['messages']:,}",
                        _busy(clock["prepare_s"], pipe.seconds),
                        _busy(clock["commit_s"], pipe.seconds),
                    )
            per_m = {k: f"{v / n * 1e6:,.1f}" for k, v in (raw.cpu | pipe.cpu).items()}
            cpu.add_row(
                label,
                str(workers),
                *(per_m.get(k, "n/a") for k in ("raw", "worker", "postgres", "broker")),
                f"{pipe.rss_peak_mb:,.0f}",
                f"{pipe.rss_growth_mb:+,.0f}",
            )
            if paced_s > 0 and shape not in JOINED:
                f = _freshness(
                    settings,
                    found,
                    console,
                    f"bench-{run_id}-{shape}-{round_no}-paced",
                    shape,
                    usage,
                    pipe.rate / 2,
                    paced_s,
                )
                fresh.add_row(
                    label,
                    f"{f.rate:,.0f}",
                    f"{f.events:,}",
                    _seconds(f.p50_s),
                    _seconds(f.p99_s),
                    _seconds(f.all_within_s),
                    "yes" if f.p99_s is not None and f.p99_s < 1 else "no",
                )
            table.add_row(
                label,
                f"{n:,}",
                f"{messages:,}",
                f"{raw.rate:,.0f}",
                f"{pipe.rate:,.0f}",
                f"{lines / pipe.seconds:,.0f}",
                f"{ratios[shape][-1]:.2f}",
                f"{raw.startup_s:.1f}",
                f"{pipe.startup_s:.1f}",
            )
    console.print(table)
    console.print(busy)
    console.print(cpu)
    if fresh.row_count:
        console.print(fresh)
    if "batched" in ratios:
        console.print(f"batched-shape ratio pipeline/raw: {median(ratios['batched']):.2f}")
    for shape in JOINED:
        if "batched" in rates and shape in rates:
            console.print(joins_ratio(rates["batched"], rates[shape], shape))


def _seconds(s: float | None) -> str:
    return "n/a" if s is None else f"{s:.2f}"


def _freshness(
    settings: Settings,
    found: Endpoints,
    console: Console,
    topic: str,
    shape: str,
    usage: list[dict[str, Any]],
    rate: float,
    seconds: float,
) -> freshness.Freshness:
    """A live worker under ``rate`` events a second of the shape for about
    ``seconds`` (fewer when the bench has fewer events), on fresh topics and
    a fresh database."""
    events = usage[: max(1, min(len(usage), int(rate * seconds)))]
    topics = topics_of(topic)
    console.print(f"[{shape}] {len(events):,} events at {rate:,.0f} a second to a live worker ...")
    try:
        asyncio.run(ensure_topics(found.kafka_url, topics, settings.partitions))
        with (
            database(found.database_url, topic) as database_url,
            Progress(console=console, transient=True) as progress,
        ):
            task = progress.add_task(f"paced {topic}", total=len(events))

            def publish() -> int:
                return asyncio.run(
                    freshness.paced_publish(
                        found.kafka_url,
                        topic,
                        events,
                        rate,
                        SHAPES[shape],
                        settings.max_message_bytes,
                        settings.kafka_compression,
                        partial(advance, progress, task),
                    )
                )

            return freshness.under_load(
                _worker_env(settings, found, topic, database_url, joins=False),
                topic,
                settings.partitions,
                publish,
                rate,
            )
    finally:
        asyncio.run(delete_topics(found.kafka_url, topics))


def joins_ratio(batched: list[float], joined: list[float], shape: str = "joined") -> str:
    """The bench's last lines: a joined shape's / batched pipeline rates,
    round by round, and their median."""
    ratios = [j / b for b, j in zip(batched, joined, strict=True)]
    name = "joins ratio" if shape == "joined" else f"joins ratio, {shape}"
    line = f"{name} ({shape} / spend path alone, pipeline rates): {median(ratios):.2f}"
    if len(ratios) > 1:
        line += f" (median of {len(ratios)} rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    return line


def _measure(
    settings: Settings,
    found: Endpoints,
    console: Console,
    topic: str,
    shape: str,
    events: list[bytes],
    side: dict[str, list[bytes]],
    workers: int = 1,
) -> tuple[Run, Run, int, int]:
    """Publish one shape's traffic to fresh topics, time the raw consumer and
    the pipeline on it, and delete the topics (the embedded broker keeps every
    message in memory). Returns both runs, the messages and the input lines."""
    joins = shape in JOINED
    traffic = {topic: events} | ({f"{topic}-{k}": v for k, v in side.items()} if joins else {})
    topics = topics_of(topic)
    # Side traffic goes in messages as large in bytes as the batched usage
    # messages (a cache event is a third of a usage event's size), the way a
    # producer that batches by size sends it; faust's cost is per message.
    side_message_bytes = SHAPES["batched"] * (sum(map(len, events)) // max(len(events), 1) + 1)
    try:
        asyncio.run(ensure_topics(found.kafka_url, topics, settings.partitions))
        messages = 0
        with Progress(console=console, transient=True) as progress:
            for name, rows in traffic.items():
                task = progress.add_task(f"publish {name}", total=len(rows))
                publisher = BatchingPublisher(
                    found.kafka_url,
                    name,
                    events_per_message=SHAPES[shape] if name == topic else 10**9,
                    max_message_bytes=(
                        settings.max_message_bytes if name == topic else side_message_bytes
                    ),
                    on_progress=partial(advance, progress, task),
                    compression=settings.kafka_compression,
                )
                messages += asyncio.run(publisher.publish(rows)).messages
        raw = asyncio.run(raw_consume(found.kafka_url, list(traffic)))
        with database(found.database_url, topic) as database_url:
            pipe = pipeline_drain(settings, found, topic, database_url, joins, workers)
    finally:
        asyncio.run(delete_topics(found.kafka_url, topics))
    return raw, pipe, messages, sum(map(len, traffic.values()))
