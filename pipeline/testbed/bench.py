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
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from statistics import median
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings
from pipeline.stream.kafka import bootstrap, delete_topics, end_offsets, ensure_topics
from pipeline.stream.producer import BatchingPublisher
from pipeline.testbed import freshness
from pipeline.testbed.drain_run import Run, advance, database, pipeline_drain, topics_of
from pipeline.testbed.simulate import side as simulate_side
from pipeline.testbed.simulate.usage import SimConfig, generate

SHAPES = {"batched": 100, "joined": 100, "per-op": 100, "single": 1}
# The shapes with the joins on, and whether their cache nodes send
# per-minute counters (True) or one event per operation.
JOINED: Final = {"joined": True, "per-op": False}


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


def _busy(seconds: float, of: float) -> str:
    return f"{seconds:.1f} s ({seconds / of:.0%})" if of > 0 else f"{seconds:.1f} s"


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
                f = freshness.paced_run(
                    settings,
                    found,
                    console,
                    f"bench-{run_id}-{shape}-{round_no}-paced",
                    shape,
                    SHAPES[shape],
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
