"""The stream's metrics: a bulk histogram counts exactly what one
observation at a time would, and request routes never carry raw paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from types import SimpleNamespace

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.core import REGISTRY

from pipeline.stream import live_metrics as live

BOUNDS = (0.1, 0.5, 1, 2, 10)
_LABELS = count()


def _samples(name: str, label: str) -> dict[str, float]:
    return {
        s.labels.get("le", s.name): s.value
        for family in REGISTRY.collect()
        if family.name == name
        for s in family.samples
        if s.labels.get("topic") == label
    }


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=200))
def test_a_bulk_histogram_counts_what_single_observations_would(values: list[float]) -> None:
    label = f"t{next(_LABELS)}"  # a series of its own per example
    _BULK.observe_many(label, np.asarray(values, dtype=np.float64))
    got = _samples("test_bulk_seconds", label)
    if not values:
        assert got == {}  # no series until something is observed
        return
    # Prometheus buckets are cumulative: le=b counts the values <= b.
    for b in BOUNDS:
        assert got[str(b)] == sum(v <= b for v in values), b
    assert got["+Inf"] == got["test_bulk_seconds_count"] == len(values)
    assert abs(got["test_bulk_seconds_sum"] - sum(values)) <= 1e-9 * max(1.0, sum(values))


_BULK = live.BulkHistogram("test_bulk_seconds", "a test's", "topic", BOUNDS)


def test_event_ages_are_seconds_before_now() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    ts = pl.Series([now - timedelta(seconds=1.5), now, now + timedelta(seconds=2)])
    assert live.event_ages(ts.cast(pl.Datetime("us", "UTC")), now).tolist() == [1.5, 0.0, -2.0]


def test_request_routes_are_templates_and_unmatched_paths_are_one_series() -> None:
    metrics = live.RequestMetrics("test_app", "route")
    metrics.observe({"route": SimpleNamespace(path="/tenants/{tenant}")}, 200, 0.01)
    metrics.observe({}, 404, 0.001)
    metrics.observe({}, 404, 0.001)
    samples = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in next(iter(metrics.requests.collect())).samples
        if s.name.endswith("_total")
    }
    assert samples == {("/tenants/{tenant}", "200"): 1.0, ("unmatched", "404"): 2.0}
