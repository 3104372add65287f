"""Spend over a time range, grouped by any of tenant, route, feature, provider, model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlalchemy import Engine, func, select

from models.spend_tables import spend_window
from pipeline.spend.windows import COUNTERS

DIMENSIONS: Final = ("tenant", "route", "feature", "provider", "model")
# Every summed column of spend_window, as the window type defines them.
MEASURES: Final = COUNTERS


@dataclass(frozen=True)
class SpendRow:
    key: tuple[str, ...]
    values: dict[str, int | Decimal]


def spend(engine: Engine, start: datetime, end: datetime, by: tuple[str, ...]) -> list[SpendRow]:
    """Sums over windows with start <= window_start < end, most expensive first."""
    unknown = set(by) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}; choose from {DIMENSIONS}")
    c = spend_window.c
    sums = [func.coalesce(func.sum(c[m]), 0).label(m) for m in MEASURES]
    query = (
        select(*(c[d] for d in by), *sums)
        .where(c.window_start >= start, c.window_start < end)
        .group_by(*(c[d] for d in by))
        .order_by(func.sum(c.cost_usd).desc().nulls_last(), *(c[d] for d in by))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        SpendRow(tuple(r[d] for d in by), {m: r[m] for m in MEASURES})
        for r in rows
        if r["attempts"]
    ]


def time_range(engine: Engine) -> tuple[datetime, datetime] | None:
    with engine.connect() as conn:
        lo, hi = conn.execute(
            select(func.min(spend_window.c.window_start), func.max(spend_window.c.window_start))
        ).one()
    return (lo, hi) if lo is not None else None
