"""Which spend table answers a time range: the daily roll-up for its whole
UTC days, the hourly one for its whole hours, the minutes only at its ragged
edges, so a year of reports reads a year of days and stays exact (the
roll-ups hold the same sums as the minutes, to the last digit).

:func:`spend_rows` gives a FROM item with every ``spend_window`` column the
reports read; the queries filter and group it as they did the minutes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from models.spend_tables import spend_window

Grain = Literal["minute", "hour", "day"]
TABLES: Final[dict[Grain, str]] = {
    "minute": "spend_window",
    "hour": "spend_window_hour",
    "day": "spend_window_day",
}
STEP: Final[dict[Grain, timedelta]] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
_COLUMNS: Final = ", ".join(c.name for c in spend_window.columns if c.name != "updated_at")


@dataclass(frozen=True)
class Piece:
    grain: Grain
    start: datetime
    end: datetime


def _floor(t: datetime, step: timedelta) -> datetime:
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + ((t - midnight) // step) * step


def _ceil(t: datetime, step: timedelta) -> datetime:
    down = _floor(t, step)
    return down if down == t else down + step


def pieces(since: datetime, until: datetime, coarsest: Grain = "day") -> list[Piece]:
    """[since, until) as disjoint pieces, each aligned to its grain, the
    coarsest grain (up to ``coarsest``) covering as much as it can. UTC."""
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        return []
    grains: list[Grain] = ["minute", "hour", "day"]
    grains = grains[: grains.index(coarsest) + 1]
    return _split(since, until, grains)


def _split(since: datetime, until: datetime, grains: list[Grain]) -> list[Piece]:
    grain, finer = grains[-1], grains[:-1]
    lo, hi = _ceil(since, STEP[grain]), _floor(until, STEP[grain])
    if not finer:
        return [Piece(grain, since, until)]
    if lo >= hi:
        return _split(since, until, finer)
    return [
        *(_split(since, lo, finer) if since < lo else []),
        Piece(grain, lo, hi),
        *(_split(hi, until, finer) if hi < until else []),
    ]


def coarsest_for(bucket_minutes: int) -> Grain:
    """The coarsest grain a chart of ``bucket_minutes`` buckets can read."""
    if bucket_minutes % (24 * 60) == 0:
        return "day"
    return "hour" if bucket_minutes % 60 == 0 else "minute"


def spend_rows(
    since: datetime, until: datetime, coarsest: Grain = "day"
) -> tuple[str, dict[str, datetime]]:
    """A parenthesised FROM item over [since, until) and its parameters
    (named ``g0s``, ``g0e``, ...; they never meet the caller's)."""
    parts: list[str] = []
    params: dict[str, datetime] = {}
    for i, p in enumerate(pieces(since, until, coarsest)):
        parts.append(
            f"SELECT {_COLUMNS} FROM {TABLES[p.grain]}"
            f" WHERE window_start >= :g{i}s AND window_start < :g{i}e"
        )
        params |= {f"g{i}s": p.start, f"g{i}e": p.end}
    if not parts:  # an empty range: no rows, the same columns
        parts.append(f"SELECT {_COLUMNS} FROM spend_window WHERE false")
    return "(" + " UNION ALL ".join(parts) + ")", params
