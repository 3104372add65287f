"""``finops soak``: a worker's memory over many events and many keys.

``finops bench`` keeps its events in memory to publish the same ones to the
raw consumer and the pipeline; this generates them as it publishes, so a
run can be as long as the broker holds (the embedded one keeps a topic in
memory until it is deleted). The
simulator's traffic goes to ``tenants`` tenants instead of its usual few,
for as many distinct (tenant, route, feature, model) keys, in NDJSON
messages of 100 events; then one ``finops worker --drain`` applies them into
a fresh database while its resident memory is sampled. Flat memory is the
point: it should stop growing once the recent-keys cache is full.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings
from pipeline.stream.kafka import delete_topics, ensure_topics
from pipeline.stream.producer import BatchingPublisher
from pipeline.testbed import drain_run
from pipeline.testbed.simulate import side as simulate_side
from pipeline.testbed.simulate.usage import SimConfig, generate

RATE = 1_000.0  # events a second of event time: 10M events span about 3 hours


def _counted(
    events: Iterator[dict[str, Any]], keys: set[tuple[str, ...]]
) -> Iterator[dict[str, Any]]:
    for e in events:
        keys.add((e["tenant"], e["route"], e["feature"], e["model"]))
        yield e


def run_soak(settings: Settings, found: Endpoints, n: int, tenants: int, console: Console) -> None:
    topic = f"bench-soak-{uuid.uuid4().hex[:8]}"
    cfg = SimConfig(
        start=datetime.now(UTC) - timedelta(seconds=n / RATE),
        duration_s=10**9,
        rate=RATE,
        seed=20261207,
        tenants=tuple(f"soak-{i:06d}" for i in range(tenants)),
        max_events=n,
    )
    keys: set[tuple[str, ...]] = set()
    topics = drain_run.topics_of(topic)
    try:
        asyncio.run(ensure_topics(found.kafka_url, topics, settings.partitions))
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"publish {topic}", total=n)
            published = asyncio.run(
                BatchingPublisher(
                    found.kafka_url,
                    topic,
                    events_per_message=settings.events_per_message,
                    max_message_bytes=settings.max_message_bytes,
                    on_progress=partial(drain_run.advance, progress, task),
                    compression=settings.kafka_compression,
                ).publish(simulate_side.lines(_counted(generate(cfg), keys)))
            )
        console.print(
            f"published {published.events:,} events of {len(keys):,} distinct"
            " (tenant, route, feature, model) keys; the worker drains them ..."
        )
        with drain_run.database(found.database_url, topic) as database_url:
            run = drain_run.pipeline_drain(settings, found, topic, database_url, joins=False)
    finally:
        asyncio.run(delete_topics(found.kafka_url, topics))
    if run.events != published.events:
        raise RuntimeError(
            f"published {published.events:,} events, the worker applied {run.events:,}"
        )
    console.print(memory_table(run.rss, n, run.rate, run.cpu.get("worker", 0.0)))


def memory_table(samples: tuple[float, ...], n: int, rate: float, worker_cpu_s: float) -> Table:
    """The worker's resident memory at each tenth of its run (start-up
    included), with a bar."""
    table = Table(
        "share of the run",
        "worker RSS MB",
        "",
        title=(
            f"worker memory over {n:,} events ({rate:,.0f} events/s,"
            f" {worker_cpu_s / n * 1e6:,.1f} worker CPU s / M events)"
        ),
    )
    if not samples:
        return table
    peak = max(samples)
    for tenth in range(1, 11):
        mb = samples[min(len(samples) - 1, len(samples) * tenth // 10)]
        table.add_row(f"{tenth * 10}%", f"{mb:,.0f}", "█" * round(40 * mb / peak))
    return table
