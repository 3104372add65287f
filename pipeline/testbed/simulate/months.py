"""Simulated daily spend over months, for backtesting the forecast.

The event simulator runs at a constant rate: right for minutes and hours,
but a month of it would take millions of events and still have no week in
it. Daily totals here follow what an AI platform's spend does: business
traffic on weekdays and a third of it at weekends, slow growth (or decline),
day-to-day noise, and now and then an incident day that costs two or three
times a normal one.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from models.money import CENT

WEEKLY: Final = (1.0, 1.06, 1.08, 1.04, 0.94, 0.42, 0.36)  # Monday .. Sunday
INCIDENT_P: Final = 0.03


def daily_spend(seed: int, start: date, days: int, base_usd: float = 1000.0) -> list[Decimal]:
    rng = random.Random(seed)
    growth = rng.uniform(-0.004, 0.012)  # per day
    scale = base_usd * rng.uniform(0.3, 3.0)
    out = []
    for i in range(days):
        day = start + timedelta(days=i)
        usd = scale * (1 + growth) ** i * WEEKLY[day.weekday()] * rng.lognormvariate(0, 0.12)
        if rng.random() < INCIDENT_P:
            usd *= rng.uniform(1.5, 3.0)
        out.append(Decimal(repr(usd)).quantize(CENT, ROUND_HALF_EVEN))
    return out
