"""Freshness under a steady load: how long from an event's time to its
committed window, read from a live worker's own ``/metrics``.

Events are published at a fixed rate, each stamped with the time it is
handed to the producer, the way a gateway stamps a call when it ends. A
node's events share a message until it holds ``per_message`` of them or its
oldest has waited ``LINGER_S`` (a producer that batches has a linger), so
the batched shape keeps its messages of 100 events at half the rate. The
worker observes commit time minus event time per event applied
(``finops_event_freshness_seconds``); the quantiles are interpolated in its
buckets the way Prometheus's ``histogram_quantile`` does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import Progress

from pipeline.embedded.endpoints import Endpoints
from pipeline.embedded.runtime import free_port, stop_child
from pipeline.settings import Settings
from pipeline.stream.kafka import delete_topics, ensure_topics
from pipeline.stream.producer import new_producer
from pipeline.testbed import drain_run

LINGER_S: Final = 0.1
TICK_S: Final = 0.01
JOIN_WITHIN_S: Final = 90.0  # the worker owns every partition by then
APPLIED_WITHIN_S: Final = 120.0  # after the last event is sent


Sample = tuple[str, dict[str, str], float]  # a scraped sample: name, labels, value


@dataclass(frozen=True)
class Freshness:
    rate: float  # events a second, as paced
    events: int
    p50_s: float | None
    p99_s: float | None
    # The upper bound of the first bucket that holds every event (inf when
    # some took longer than the largest finite bucket).
    all_within_s: float | None


def quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram (``(le, count)`` pairs,
    ``+Inf`` last), interpolated linearly inside its bucket as Prometheus
    does; None for an empty one. A quantile in the ``+Inf`` bucket is the
    largest finite bound."""
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if le == float("inf"):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def all_within(buckets: Sequence[tuple[float, float]]) -> float | None:
    """The bound of the first bucket that holds every observation (None:
    none made)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    return next(le for le, count in ordered if count >= ordered[-1][1])


def _stamp() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def paced_publish(
    kafka_url: str,
    topic: str,
    events: Sequence[dict[str, Any]],
    rate: float,
    per_message: int,
    max_message_bytes: int,
    compression: str | None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Publish ``events`` at ``rate`` a second, each stamped when it is due;
    returns how many were sent."""
    producer = new_producer(kafka_url, max_message_bytes, compression)
    await producer.start()
    buffers: dict[str, tuple[float, list[bytes]]] = {}
    sends: list[asyncio.Future[Any]] = []
    sent = 0

    async def send(key: str, lines: list[bytes]) -> None:
        sends.append(await producer.send(topic, b"\n".join(lines), key=key.encode()))

    try:
        t0 = time.monotonic()
        while sent < len(events) or buffers:
            now = time.monotonic()
            due = min(len(events), int((now - t0) * rate) + 1)
            stamp = _stamp()
            for e in events[sent:due]:
                key = str(e["node_id"])
                lines = buffers.setdefault(key, (now, []))[1]
                lines.append(json.dumps({**e, "ts": stamp}).encode())
                if len(lines) >= per_message:
                    await send(key, lines)
                    del buffers[key]
            sent = max(sent, due)
            for key, (since, lines) in list(buffers.items()):
                if now - since >= LINGER_S or sent == len(events):
                    await send(key, lines)
                    del buffers[key]
            on_progress(sent)
            await asyncio.sleep(TICK_S)
        await producer.flush()
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return sent


def _samples(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _until(
    url: str,
    test: Callable[[list[Sample]], bool],
    within_s: float,
    what: str,
    worker: subprocess.Popen[bytes],
) -> list[Sample]:
    deadline = time.monotonic() + within_s
    while True:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited ({worker.returncode}) before {what}")
        try:
            samples = _samples(url)
        except OSError:
            samples = []
        if samples and test(samples):
            return samples
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} within {within_s:.0f} s")
        time.sleep(0.25)


def _owned(samples: Iterable[Sample], topic: str) -> int:
    lag = "finops_consumer_lag_messages"
    return sum(n == lag and s.get("topic") == topic for n, s, _ in samples)


def _accepted(samples: Iterable[Sample], topic: str) -> float:
    return sum(
        v
        for n, s, v in samples
        if n == "finops_lines_total" and s.get("topic") == topic and s.get("outcome") == "accepted"
    )


def under_load(
    env: dict[str, str],
    topic: str,
    partitions: int,
    publish: Callable[[], int],
    rate: float,
) -> Freshness:
    """Start a live worker on ``env``, wait until it owns every partition of
    ``topic``, ``publish`` (returns the events sent), wait until every one is
    applied, and read the worker's freshness histogram; the worker is
    stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "worker.log"
        with log.open("wb") as err:
            worker = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker"],
                env={**env, "FINOPS_METRICS_PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            _until(
                url,
                lambda s: _owned(s, topic) >= partitions,
                JOIN_WITHIN_S,
                "every partition owned",
                worker,
            )
            sent = publish()
            samples = _until(
                url,
                lambda s: _accepted(s, topic) >= sent,
                APPLIED_WITHIN_S,
                f"{sent:,} events applied",
                worker,
            )
        except RuntimeError as e:
            raise RuntimeError(f"{e}; the worker's log ends: {log.read_text()[-2000:]}") from e
        finally:
            stop_child(worker, 30)
    buckets = [
        (float(s["le"]), v)
        for n, s, v in samples
        if n == "finops_event_freshness_seconds_bucket" and s.get("topic") == topic
    ]
    return Freshness(
        rate, sent, quantile(buckets, 0.5), quantile(buckets, 0.99), all_within(buckets)
    )


def paced_run(
    settings: Settings,
    found: Endpoints,
    console: Console,
    topic: str,
    shape: str,
    per_message: int,
    usage: list[dict[str, Any]],
    rate: float,
    seconds: float,
) -> Freshness:
    """A live worker under ``rate`` events a second of ``shape`` (that many
    events ``per_message``) for about ``seconds`` (fewer when ``usage`` has
    fewer events), on fresh topics and a fresh database."""
    events = usage[: max(1, min(len(usage), int(rate * seconds)))]
    topics = drain_run.topics_of(topic)
    console.print(f"[{shape}] {len(events):,} events at {rate:,.0f} a second to a live worker ...")
    try:
        asyncio.run(ensure_topics(found.kafka_url, topics, settings.partitions))
        with (
            drain_run.database(found.database_url, topic) as database_url,
            Progress(console=console, transient=True) as progress,
        ):
            task = progress.add_task(f"paced {topic}", total=len(events))

            def publish() -> int:
                return asyncio.run(
                    paced_publish(
                        found.kafka_url,
                        topic,
                        events,
                        rate,
                        per_message,
                        settings.max_message_bytes,
                        settings.kafka_compression,
                        partial(drain_run.advance, progress, task),
                    )
                )

            return under_load(
                drain_run.worker_env(settings, found, topic, database_url, joins=False),
                topic,
                settings.partitions,
                publish,
                rate,
            )
    finally:
        asyncio.run(delete_topics(found.kafka_url, topics))
