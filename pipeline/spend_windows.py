"""1-minute event-time spend windows per (tenant, route, feature, provider, model).

A window row here is a *partial sum*: the sink adds it to whatever the table
already holds, so every worker can write its share independently and the
upsert is the final group-by.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Final

import polars as pl

from models.money import exact
from models.prices import PriceBook

WINDOW: Final = "1m"
KEY: Final = ("window_start", "tenant", "route", "feature", "provider", "model")
TOKENS: Final = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class SpendWindow:
    window_start: datetime
    tenant: str
    route: str
    feature: str
    provider: str
    model: str
    attempts: int = 0
    requests: int = 0
    retry_attempts: int = 0
    failed_attempts: int = 0
    unpriced_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    retry_cost_usd: Decimal = Decimal(0)
    failed_cost_usd: Decimal = Decimal(0)

    def key(self) -> tuple[object, ...]:
        return tuple(getattr(self, k) for k in KEY)

    def __add__(self, other: SpendWindow) -> SpendWindow:
        if self.key() != other.key():
            raise ValueError("only windows with the same key add up")
        with exact():
            summed = {
                f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in fields(self)
                if f.name not in KEY
            }
        return SpendWindow(**dict(zip(KEY, self.key(), strict=True)), **summed)  # type: ignore[arg-type]


COUNTERS: Final = tuple(f.name for f in fields(SpendWindow) if f.name not in KEY)


def with_window(events: pl.DataFrame) -> pl.DataFrame:
    return events.with_columns(pl.col("ts").dt.truncate(WINDOW).alias("window_start"))


def aggregate(priced: pl.DataFrame, book: PriceBook) -> list[SpendWindow]:
    """Sum priced events (with ``price_id``) into window partial sums.

    Events are first grouped by everything the cost depends on (price version
    and batch flag) and by what splits the cost (retry, failure); each group's
    cost is one exact Decimal evaluation of the cost rule on its summed tokens.
    """
    if priced.is_empty():
        return []
    groups = (
        with_window(priced)
        .with_columns(
            (pl.col("attempt") > 1).alias("is_retry"),
            (pl.col("status") != "ok").alias("is_failed"),
        )
        .group_by([*KEY, "price_id", "batch", "is_retry", "is_failed"])
        .agg(
            pl.len().alias("attempts"),
            (pl.col("attempt") == 1).sum().alias("requests"),
            *[pl.col(t).sum() for t in TOKENS],
        )
    )
    windows: dict[tuple[object, ...], SpendWindow] = {}
    for g in groups.iter_rows(named=True):
        price_id = g["price_id"]
        cost = Decimal(0)
        if price_id is not None:
            cost = book.entries[price_id].cost(
                input_tokens=g["input_tokens"],
                output_tokens=g["output_tokens"],
                cache_read_tokens=g["cache_read_tokens"],
                cache_write_tokens=g["cache_write_tokens"],
                batch=g["batch"],
            )
        attempts = g["attempts"]
        part = SpendWindow(
            **{k: g[k] for k in KEY},
            attempts=attempts,
            requests=g["requests"],
            retry_attempts=attempts if g["is_retry"] else 0,
            failed_attempts=attempts if g["is_failed"] else 0,
            unpriced_attempts=attempts if price_id is None else 0,
            **{t: g[t] for t in TOKENS},
            cost_usd=cost,
            retry_cost_usd=cost if g["is_retry"] else Decimal(0),
            failed_cost_usd=cost if g["is_failed"] else Decimal(0),
        )
        key = part.key()
        windows[key] = windows[key] + part if key in windows else part
    return list(windows.values())
