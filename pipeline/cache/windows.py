"""Cache attribution windows from cache events, and what they are worth. Pure.

Per (window, tenant, route, layer, model, provider): hits, misses and the
tokens of each, so request-weighted hit rate = hits / (hits + misses) and
token-weighted hit rate = hit_tokens / (hit_tokens + miss_tokens) are exact
ratios of stored integers. Per (window, evicting tenant, evicted tenant,
layer, model, provider): evictions and evicted tokens, which name the
tenant whose launch thrashed a shared cache.

Dollars are not stored: :func:`saving` values tokens with the price book at
query time, so a price loaded later needs no re-processing. A prefix hit
saves the difference between the full input price and the cache-read price;
a response or semantic hit saves the whole call (prompt and answer); an
embedding hit saves the embedding call. The cost an eviction pushes onto the
evicted tenant is the saving it loses on its next lookup of that entry (one
re-read: a lower bound, since a hot prefix is read many times).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Final

import polars as pl

from models.contracts import CacheEvent
from models.prices import PriceBook, PriceEntry
from pipeline.cache.codec import SCHEMA
from pipeline.stream.ndjson import TS_DTYPE

WHOLE_CALL: Final = frozenset({"response", "semantic"})
UNKNOWN: Final = ""  # model/provider of an event that did not name them


def saving(layer: str, price: PriceEntry, tokens: int, output_tokens: int) -> Decimal:
    """USD that serving ``tokens`` (and, for whole-call layers, an answer of
    ``output_tokens``) from the ``layer`` cache saved against the model."""
    answer = output_tokens if layer in WHOLE_CALL else 0
    full = price.cost(
        input_tokens=tokens,
        output_tokens=answer,
        cache_read_tokens=0,
        cache_write_tokens=0,
        batch=False,
    )
    if layer != "prefix":
        return full
    read = price.cost(
        input_tokens=tokens,
        output_tokens=0,
        cache_read_tokens=tokens,
        cache_write_tokens=0,
        batch=False,
    )
    return full - read


def value_at(
    book: PriceBook,
    layer: str,
    model: str,
    provider: str,
    at: datetime,
    tokens: int,
    output_tokens: int,
) -> Decimal | None:
    """:func:`saving` with the price in force at ``at``; None when the model
    has no price then (or the cache did not name its model)."""
    price = book.price_at(model, provider, at)
    return None if price is None else saving(layer, price, tokens, output_tokens)


@dataclass(frozen=True)
class CacheWindow:
    window_start: datetime
    tenant: str
    route: str
    layer: str
    model: str
    provider: str
    hits: int = 0
    misses: int = 0
    hit_tokens: int = 0
    miss_tokens: int = 0
    inserts: int = 0
    hit_output_tokens: int = 0

    @property
    def hit_rate(self) -> Fraction | None:
        seen = self.hits + self.misses
        return Fraction(self.hits, seen) if seen else None

    @property
    def token_hit_rate(self) -> Fraction | None:
        seen = self.hit_tokens + self.miss_tokens
        return Fraction(self.hit_tokens, seen) if seen else None


@dataclass(frozen=True)
class EvictionWindow:
    window_start: datetime
    evicting_tenant: str
    evicted_tenant: str
    layer: str
    model: str
    provider: str
    evictions: int
    evicted_tokens: int
    evicted_output_tokens: int = 0


WINDOW_KEY: Final = ("window_start", "tenant", "route", "layer", "model", "provider")
EVICTION_KEY: Final = (
    "window_start",
    "evicting_tenant",
    "evicted_tenant",
    "layer",
    "model",
    "provider",
)


def window_frames(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cache windows and eviction windows of a frame of cache events (the
    ``pipeline.cache.codec`` frame), columns in :class:`CacheWindow` and
    :class:`EvictionWindow` field order."""
    op = pl.col("op")
    e = events.with_columns(
        pl.col("ts").dt.truncate("1m").alias("window_start"),
        pl.col("model").fill_null(UNKNOWN),
        pl.col("provider").fill_null(UNKNOWN),
    )

    def total(column: str, kind: str) -> pl.Expr:
        return pl.col(column).filter(op == kind).sum().cast(pl.Int64())

    def count(kind: str) -> pl.Expr:
        # A line stands for ``count`` operations (a cache node's counter).
        return total("count", kind)

    windows = (
        e.filter(op != "evict")
        .group_by(WINDOW_KEY)
        .agg(
            count("hit").alias("hits"),
            count("miss").alias("misses"),
            total("tokens", "hit").alias("hit_tokens"),
            total("tokens", "miss").alias("miss_tokens"),
            count("insert").alias("inserts"),
            total("output_tokens", "hit").alias("hit_output_tokens"),
        )
        .sort(WINDOW_KEY)
    )
    # An evict event's tenant caused it; owner_tenant lost the entry.
    evictions = (
        e.filter(op == "evict")
        .rename({"tenant": "evicting_tenant", "owner_tenant": "evicted_tenant"})
        .group_by(EVICTION_KEY)
        .agg(
            pl.col("count").sum().cast(pl.Int64()).alias("evictions"),
            pl.col("tokens").sum().cast(pl.Int64()).alias("evicted_tokens"),
            pl.col("output_tokens").sum().cast(pl.Int64()).alias("evicted_output_tokens"),
        )
        .sort(EVICTION_KEY)
    )
    return windows, evictions


def cache_windows(events: Iterable[CacheEvent]) -> tuple[list[CacheWindow], list[EvictionWindow]]:
    """:func:`window_frames` for validated events, as dataclasses."""
    rows = [e.model_dump(include=set(SCHEMA)) for e in events]
    frame = pl.DataFrame(rows, schema={**SCHEMA, "ts": TS_DTYPE})
    windows, evictions = window_frames(frame)
    return (
        [CacheWindow(*r) for r in windows.iter_rows()],
        [EvictionWindow(*r) for r in evictions.iter_rows()],
    )


def top_evictors(
    evicted: Iterable[EvictionWindow], *, others_only: bool = True
) -> list[tuple[str, int]]:
    """Tenants by the tokens they evicted from *other* tenants, most first."""
    totals: dict[str, int] = defaultdict(int)
    for e in evicted:
        if not others_only or e.evicting_tenant != e.evicted_tenant:
            totals[e.evicting_tenant] += e.evicted_tokens
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
