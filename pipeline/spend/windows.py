"""1-minute event-time spend windows per (tenant, route, feature, provider, model).

A window row here is a *partial sum*: the sink adds it to whatever the table
already holds, so every worker can write its share independently and the
upsert is the final group-by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import polars as pl

from models.money import ZERO, TokenCounts, exact
from models.prices import PriceBook
from models.spend_tables import KIND_COSTS

WINDOW: Final = "1m"
KEY: Final = ("window_start", "tenant", "route", "feature", "provider", "model")
# In the order of models.money.TokenCounts.
TOKENS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


def counts(row: Mapping[str, Any], prefix: str = "") -> TokenCounts:
    """The token counts of a row with :data:`TOKENS` (each behind ``prefix``)."""
    return TokenCounts(*(row[k] for k in _NAMES[prefix]))


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
    # For the anomaly rules: structured-output re-prompts (attempts that
    # returned invalid output, and their cost), attempts served by a fallback
    # model, and the gateway's own token count against the billed one
    # (attempts that carried one, their billed input tokens, the sum of
    # |local - billed|).
    invalid_attempts: int = 0
    invalid_cost_usd: Decimal = Decimal(0)
    fallback_attempts: int = 0
    drift_attempts: int = 0
    drift_billed_tokens: int = 0
    drift_abs_tokens: int = 0
    # For chargeback: list cost (no batch discount) of all attempts and of the
    # retries, and the failed first attempts' cost at effective and list price.
    list_cost_usd: Decimal = Decimal(0)
    retry_list_cost_usd: Decimal = Decimal(0)
    failed_first_cost_usd: Decimal = Decimal(0)
    failed_first_list_cost_usd: Decimal = Decimal(0)
    # Price book v2 (migration 0015): the parts of cache_write_tokens written
    # for an hour and of output_tokens spent thinking, and cost_usd by kind.
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    input_cost_usd: Decimal = Decimal(0)
    cache_read_cost_usd: Decimal = Decimal(0)
    cache_write_5m_cost_usd: Decimal = Decimal(0)
    cache_write_1h_cost_usd: Decimal = Decimal(0)
    output_cost_usd: Decimal = Decimal(0)
    reasoning_cost_usd: Decimal = Decimal(0)

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

    def negated(self) -> SpendWindow:
        return SpendWindow(
            **dict(zip(KEY, self.key(), strict=True)),  # type: ignore[arg-type]
            **{c: -getattr(self, c) for c in COUNTERS},
        )

    def is_zero(self) -> bool:
        return all(not getattr(self, c) for c in COUNTERS)


COUNTERS: Final = tuple(f.name for f in fields(SpendWindow) if f.name not in KEY)


def with_window(events: pl.DataFrame) -> pl.DataFrame:
    return events.with_columns(pl.col("ts").dt.truncate(WINDOW).alias("window_start"))


@dataclass(frozen=True)
class Subset:
    """Attempts a cost column is summed over: as a polars filter on events
    (``attempt``, ``status``) and as a test on a stored attempt's
    (attempt, failed, invalid), so the stream and repricing agree."""

    expr: pl.Expr | None  # None: every attempt
    test: Callable[[int, bool, bool], bool]


RETRY: Final = pl.col("attempt") > 1
FAILED: Final = pl.col("status") != "ok"
INVALID: Final = pl.col("status") == "invalid_output"
SUBSETS: Final = {
    "": Subset(None, lambda attempt, failed, invalid: True),
    "retry_": Subset(RETRY, lambda attempt, failed, invalid: attempt > 1),
    "failed_": Subset(FAILED, lambda attempt, failed, invalid: failed),
    "invalid_": Subset(INVALID, lambda attempt, failed, invalid: invalid),
    "failed_first_": Subset(
        FAILED & ~RETRY, lambda attempt, failed, invalid: failed and attempt == 1
    ),
}

# Each cost column, the subset (prefix of the token sums) it is costed from,
# and whether it is at list price (no batch discount).
COSTED: Final = (
    ("cost_usd", "", False),
    ("retry_cost_usd", "retry_", False),
    ("failed_cost_usd", "failed_", False),
    ("invalid_cost_usd", "invalid_", False),
    ("list_cost_usd", "", True),
    ("retry_list_cost_usd", "retry_", True),
    ("failed_first_cost_usd", "failed_first_", False),
    ("failed_first_list_cost_usd", "failed_first_", True),
)
# The summed token columns of each subset, in TOKENS order.
_NAMES: Final = {p: tuple(f"{p}{t}" for t in TOKENS) for p in SUBSETS}
COSTED_COLUMNS: Final = tuple(column for column, _, _ in COSTED)
_RULE_COUNTS: Final = (
    "invalid_attempts",
    "fallback_attempts",
    "drift_attempts",
    "drift_billed_tokens",
    "drift_abs_tokens",
)


def aggregate(priced: pl.DataFrame, book: PriceBook) -> list[SpendWindow]:
    """Sum priced events (with :data:`pipeline.spend.pricing.PRICED`) into
    window partial sums.

    polars sums the tokens per (window key, entry, discount, list entry),
    once for all attempts and once for each of :data:`SUBSETS`; each of those
    sums is then costed by one exact Decimal evaluation of the cost rule,
    which is linear in the tokens. No float ever holds money.
    """
    if priced.is_empty():
        return []
    local = pl.col("local_input_tokens")
    subset_sums = [
        pl.col(t).filter(s.expr).sum().alias(f"{prefix}{t}")
        for prefix, s in SUBSETS.items()
        if s.expr is not None
        for t in TOKENS
    ]
    groups = (
        with_window(priced)
        .group_by([*KEY, "price_id", "discounted", "list_price_id"])
        .agg(
            pl.len().alias("attempts"),
            (pl.col("attempt") == 1).sum().alias("requests"),
            RETRY.sum().alias("retry_attempts"),
            FAILED.sum().alias("failed_attempts"),
            *[pl.col(t).sum() for t in TOKENS],
            *subset_sums,
            INVALID.sum().alias("invalid_attempts"),
            pl.col("fallback_from").is_not_null().sum().alias("fallback_attempts"),
            local.is_not_null().sum().alias("drift_attempts"),
            pl.col("input_tokens").filter(local.is_not_null()).sum().alias("drift_billed_tokens"),
            (local - pl.col("input_tokens")).abs().sum().alias("drift_abs_tokens"),
        )
    )
    parts = []
    for g in groups.iter_rows(named=True):
        price_id, attempts = g["price_id"], g["attempts"]
        costs: dict[str, Any] = dict.fromkeys((*COSTED_COLUMNS, *KIND_COSTS), ZERO)
        if price_id is not None:
            price, listed = book.entries[price_id], book.entries[g["list_price_id"]]
            # At list the same entry with no discount costs what it costs.
            same = g["list_price_id"] == price_id and not g["discounted"]
            effective: dict[str, Decimal | None] = {}  # None: the subset has no tokens
            for column, prefix, at_list in COSTED:
                if not at_list:
                    values = [g[k] for k in _NAMES[prefix]]
                    if not any(values):
                        effective[prefix] = None
                        continue
                    by_kind = price.costs(TokenCounts(*values), discounted=g["discounted"])
                    effective[prefix] = costs[column] = by_kind.total
                    if not prefix:
                        costs.update(zip(KIND_COSTS, by_kind.parts(), strict=True))
                elif (cost := effective[prefix]) is not None:
                    costs[column] = (
                        cost if same else listed.costs(counts(g, prefix), discounted=False).total
                    )
        parts.append(
            SpendWindow(
                **{k: g[k] for k in KEY},
                attempts=attempts,
                requests=g["requests"],
                retry_attempts=g["retry_attempts"],
                failed_attempts=g["failed_attempts"],
                unpriced_attempts=attempts if price_id is None else 0,
                **{t: g[t] for t in TOKENS},
                **costs,
                **{c: g[c] for c in _RULE_COUNTS},
            )
        )
    return combine(parts)


def combine(*parts: list[SpendWindow]) -> list[SpendWindow]:
    """Add partial sums by key; windows that cancel out entirely are dropped."""
    windows: dict[tuple[object, ...], SpendWindow] = {}
    for part in parts:
        for w in part:
            key = w.key()
            windows[key] = windows[key] + w if key in windows else w
    return [w for w in windows.values() if not w.is_zero()]
