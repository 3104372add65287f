"""The retry cost of each retried request in a batch. Pure.

Only attempts after the first are summed: a runaway request is one that
keeps retrying, and tracking every request's first attempt would cost the
spend path a Decimal evaluation per request. Tokens are summed per request
and price version in polars, then costed once per group with the exact cost
rule (linear in the tokens).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Final

import polars as pl

from models.money import exact
from models.prices import PriceBook
from pipeline.spend.windows import TOKENS, counts

SCHEMA: Final[dict[str, pl.DataType]] = {
    "tenant": pl.String(),
    "request_id": pl.String(),
    "route": pl.String(),
    "first_ts": pl.Datetime("us", "UTC"),
    "last_ts": pl.Datetime("us", "UTC"),
    "retries": pl.Int64(),
    "retry_cost_usd": pl.String(),  # exact decimal text, for COPY
}
COLUMNS: Final = tuple(SCHEMA)


def retry_costs(events: pl.DataFrame, book: PriceBook) -> pl.DataFrame:
    """One row per retried request in ``events`` (priced events only)."""
    retried = events.filter((pl.col("attempt") > 1) & pl.col("price_id").is_not_null())
    if retried.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    groups = retried.group_by("tenant", "request_id", "price_id", "discounted").agg(
        pl.col("route").first(),
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
        pl.len().alias("retries"),
        *[pl.col(t).sum() for t in TOKENS],
    )
    route: dict[tuple[str, str], str] = {}
    first: dict[tuple[str, str], datetime] = {}
    last: dict[tuple[str, str], datetime] = {}
    retries: dict[tuple[str, str], int] = defaultdict(int)
    cost: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for g in groups.iter_rows(named=True):
        key = (g["tenant"], g["request_id"])
        price = book.entries[g["price_id"]]
        with exact():
            cost[key] += price.costs(counts(g), discounted=g["discounted"]).total
        route.setdefault(key, g["route"])
        first[key] = min(first.get(key, g["first_ts"]), g["first_ts"])
        last[key] = max(last.get(key, g["last_ts"]), g["last_ts"])
        retries[key] += g["retries"]
    return pl.DataFrame(
        [(*k, route[k], first[k], last[k], retries[k], str(cost[k])) for k in route],
        schema=SCHEMA,
        orient="row",
    )
