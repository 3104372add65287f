"""Latency histograms: calls per bucket of BOUNDS_MS (5% apart), so a
percentile read from any span of merged windows is within 5% above the true
one. Pure."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import polars as pl

# Bucket upper bounds, ms: 5% apart from 1 ms to about 10 minutes.
BOUNDS_MS: Final = tuple(sorted({math.ceil(1.05**i) for i in range(0, 273)}))


@dataclass
class Histogram:
    """Counts per bucket of BOUNDS_MS (the last bucket also holds anything
    larger). Windows merge by adding counts, so percentiles can be computed
    across any span of windows."""

    counts: list[int] = field(default_factory=lambda: [0] * len(BOUNDS_MS))

    def add(self, latency_ms: int, n: int = 1) -> None:
        self.counts[min(bisect_left(BOUNDS_MS, latency_ms), len(BOUNDS_MS) - 1)] += n

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def quantile(self, q: Decimal) -> int | None:
        """The bucket bound at or above the q-quantile (nearest rank)."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for bound, n in zip(BOUNDS_MS, self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return BOUNDS_MS[-1]


def bucket(latency_ms: pl.Expr) -> pl.Expr:
    """The bucket index of each latency, as Histogram.add files it."""
    bounds = pl.lit(pl.Series(BOUNDS_MS, dtype=pl.Int64()))
    return bounds.search_sorted(latency_ms, side="left").clip(0, len(BOUNDS_MS) - 1)


def latency_parts(events: pl.DataFrame) -> pl.DataFrame:
    """Calls per (window, route, model, bucket) of events with a latency."""
    return (
        events.filter(pl.col("latency_ms").is_not_null())
        .group_by(
            pl.col("ts").dt.truncate("1m").alias("window_start"),
            "route",
            "model",
            bucket(pl.col("latency_ms")).cast(pl.Int16()).alias("bucket"),
        )
        .agg(pl.len().cast(pl.Int64()).alias("calls"))
    )
