"""Month-end spend forecast with weekly seasonality. Pure: no I/O.

The method is :data:`METHOD`, stated on the finance summary and by
``finops forecast``. A forecast is an estimate, not an amount billed: it is
computed in floats and shown rounded to the cent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from statistics import fmean, pstdev
from typing import Final

from models.money import CENT
from models.months import days_in

METHOD: Final = (
    "Each weekday gets a seasonal factor: its mean daily spend over the known days (the month so "
    "far and the 28 days before it) divided by the mean of all known days; a weekday seen fewer "
    "than twice gets 1. The level is the mean seasonally adjusted spend of the last 14 known "
    "days. Each remaining day is forecast as level x its weekday's factor, and the month-end "
    "forecast is the month to date plus those days. The 80% interval is 1.2816 standard "
    "deviations of all the adjusted known days, scaled for the remaining days' sum (sqrt of "
    "their number) and for the level's own uncertainty (their number / sqrt of the days in the "
    "level)."
)
Z80: Final = 1.2816
LEVEL_DAYS: Final = 14


@dataclass(frozen=True)
class Forecast:
    month_to_date: Decimal
    expected: Decimal  # month-end total
    low: Decimal
    high: Decimal
    days_known: int
    days_in_month: int


def _usd(x: float) -> Decimal:
    return Decimal(repr(x)).quantize(CENT, ROUND_HALF_EVEN)


def forecast(month: date, daily: Sequence[Decimal], history: Sequence[Decimal] = ()) -> Forecast:
    """``daily``: spend of the month's first days, in order; ``history``: the
    days right before the month, oldest first (used for the seasonal factors
    and, when the month has few days yet, the level)."""
    total_days = days_in(month)
    k = total_days - len(daily)
    if k < 0:
        raise ValueError("more days than the month has")
    mtd = sum(daily, Decimal(0))
    # Days before the first spend: the tenant (feature, model) did not exist yet.
    while history and not history[0]:
        history = history[1:]
    known = [float(v) for v in (*history, *daily)]
    first = month - timedelta(days=len(history))
    weekdays = [(first + timedelta(days=i)).weekday() for i in range(len(known))]
    if not known or k == 0:
        return Forecast(mtd, mtd, mtd, mtd, len(daily), total_days)
    overall = fmean(known) or 1.0
    factor = {}
    for wd in range(7):
        seen = [v for v, w in zip(known, weekdays, strict=True) if w == wd]
        factor[wd] = fmean(seen) / overall if len(seen) >= 2 and overall else 1.0
    adjusted = [v / (factor[w] or 1.0) for v, w in zip(known, weekdays, strict=True)]
    recent = adjusted[-LEVEL_DAYS:]
    level = fmean(recent)
    # The spread over every known day: incident days and trend included.
    spread = pstdev(adjusted) if len(adjusted) > 1 else level * 0.25
    remaining = [(month + timedelta(days=len(daily) + i)).weekday() for i in range(k)]
    rest = sum(level * factor[w] for w in remaining)
    sd = spread * math.sqrt(k) + spread * k / math.sqrt(len(recent))
    expected = float(mtd) + rest
    return Forecast(
        mtd,
        _usd(expected),
        _usd(max(float(mtd), expected - Z80 * sd)),
        _usd(expected + Z80 * sd),
        len(daily),
        total_days,
    )


def forecasts(
    daily: Mapping[str, Sequence[tuple[date, Decimal]]], month: date, known_days: int
) -> dict[str, Forecast]:
    """A forecast per key of ``daily`` (its spend per day, the days before
    ``month`` as history), as known after the month's first ``known_days``."""
    out = {}
    for key, days in daily.items():
        history = [usd for d, usd in days if d < month]
        this_month = [usd for d, usd in days if d >= month]
        out[key] = forecast(month, this_month[:known_days], history)
    return out
