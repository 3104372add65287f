"""What a running process tells Prometheus about its stream: messages and
lines applied by outcome, dead letters by reason, batches and their sizes,
stage busy time, commit latency and event freshness. Served on
``FINOPS_METRICS_PORT`` by :func:`serve`; the names follow Prometheus'
conventions (``finops_`` prefix, base units, counters end in ``_total``).

These are the process's own counters since it started (Prometheus' ``rate``
and ``increase`` handle restarts); ``finops metrics`` prints the
database-side totals, which add up across workers and restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.stream.dead_letter import DeadLetter

# A `_created` series per counter doubles what is scraped for what `rate`
# already handles (restarts).
disable_created_metrics()  # type: ignore[no-untyped-call]

MESSAGES = Counter("finops_messages", "Kafka messages applied, by topic", ["topic"])
LINES = Counter(
    "finops_lines",
    "Lines applied, by topic and outcome (accepted, duplicate, dead_lettered)",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "finops_dead_letters", "Lines dead-lettered, by topic and reason", ["topic", "reason"]
)
BATCHES = Counter("finops_batches", "Batches committed, by agent", ["agent"])
BATCH_MESSAGES = Histogram(
    "finops_batch_messages",
    "Kafka messages per committed batch",
    ["agent"],
    buckets=(1, 5, 25, 50, 100, 200, 400, 800, 1600),
)
STAGE_BUSY = Counter(
    "finops_stage_busy_seconds",
    "Time an agent's stage was busy (prepare: decode and price; commit: the transaction)",
    ["agent", "stage"],
)
COMMIT_SECONDS = Histogram(
    "finops_commit_duration_seconds",
    "Time a batch's commit stage took, retries included",
    ["agent"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG = Gauge(
    "finops_consumer_lag_messages",
    "End offset minus applied offset, per topic-partition this process owns",
    ["topic", "partition"],
)


class BulkHistogram(Collector):
    """A histogram that takes a whole array of observations in one call:
    a batch of 40,000 event ages costs one ``searchsorted``, where
    ``Histogram.observe`` would take a lock 40,000 times."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]):
        self._name, self._doc, self._label = name, documentation, label
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[str, tuple[np.ndarray, float]] = {}
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_many(self, label_value: str, values: np.ndarray) -> None:
        if not len(values):
            return
        # The first bound at or above a value is its bucket ("le").
        counts = np.bincount(
            np.searchsorted(self._bounds, values, side="left"), minlength=len(self._bounds) + 1
        )
        with self._lock:
            held, total = self._series.get(label_value, (np.zeros_like(counts), 0.0))
            self._series[label_value] = (held + counts, total + float(values.sum()))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=[self._label])
        with self._lock:
            series = dict(self._series)
        for value, (counts, total) in sorted(series.items()):
            cumulative = np.cumsum(counts)
            bounds = [*map(_bound, self._bounds), "+Inf"]
            buckets = list(zip(bounds, map(float, cumulative), strict=True))
            family.add_metric([value], buckets, total)
        yield family


def _bound(b: float) -> str:
    return str(int(b)) if b == int(b) else str(b)


FRESHNESS = BulkHistogram(
    "finops_event_freshness_seconds",
    "Commit time minus event time, per event applied",
    "topic",
    (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 3600, 86400),
)


class CountersBy(Collector):
    """A counter family read from whatever ``source`` returns at scrape time
    (the sinks' fault counters, kept by kind in plain dicts)."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self._name, self._doc, self._label = name, documentation, label
        self.source: Callable[[], Mapping[str, int]] = dict
        REGISTRY.register(self)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for key, n in sorted(self.source().items()):
            family.add_metric([key], float(n))
        yield family


def record_applied(
    topic: str,
    messages: int,
    accepted: Mapping[int, int],
    duplicates: Mapping[int, int],
    dead: Sequence[DeadLetter],
) -> None:
    """One committed batch's messages and lines."""
    MESSAGES.labels(topic).inc(messages)
    LINES.labels(topic, "accepted").inc(sum(accepted.values()))
    LINES.labels(topic, "duplicate").inc(sum(duplicates.values()))
    LINES.labels(topic, "dead_lettered").inc(len(dead))
    for d in dead:
        DEAD_LETTERS.labels(topic, d.reason.split(":", 1)[0]).inc()


def event_ages(ts: pl.Series, now: datetime) -> np.ndarray:
    """Seconds from each event time to ``now``."""
    micros = (pl.lit(now, dtype=ts.dtype) - ts).dt.total_microseconds()
    return pl.select(micros).to_series().to_numpy().astype(np.float64) / 1e6


def serve(port: int | None, host: str = "127.0.0.1") -> None:
    """Serve this process's metrics on ``host:port`` from a daemon thread
    (nothing when ``port`` is unset)."""
    if port is not None:
        start_http_server(port, addr=host)


class RequestMetrics:
    """An HTTP server's requests by route and status, and their durations.
    The route is the template the app matched, never the raw path, so a
    scanner's made-up paths add one ``unmatched`` series, not one each."""

    def __init__(self, prefix: str, label: str) -> None:
        self.requests = Counter(
            f"{prefix}_requests", f"Requests answered, by {label} and status", [label, "status"]
        )
        self.seconds = Histogram(
            f"{prefix}_request_duration_seconds", f"Time to answer a request, by {label}", [label]
        )

    async def __call__(self, request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        """As an app's ``http`` middleware."""
        t0 = time.perf_counter()
        response = await call_next(request)
        self.observe(request.scope, response.status_code, time.perf_counter() - t0)
        return response

    def observe(self, scope: Mapping[str, Any], status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.requests.labels(route, str(status)).inc()
        self.seconds.labels(route).observe(seconds)
