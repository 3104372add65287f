"""The partitions of the tables that grow with time: ``seen_event`` by event
day, ``spend_window`` by month. Pure: names, bounds and the statements that
create them; the retention horizon; which partitions are past it. The sinks
create the partitions a batch needs before its transaction (there is no
default partition, so nothing lands where retention cannot drop it), and
retention drops whole partitions, never rows."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from math import ceil
from typing import Final, Literal

from models.months import next_month

Grain = Literal["day", "month"]


@dataclass(frozen=True)
class Partitioned:
    table: str
    grain: Grain
    column: str  # the partition key, a date or timestamptz


SEEN_EVENT: Final = Partitioned("seen_event", "day", "event_day")
SPEND_WINDOW: Final = Partitioned("spend_window", "month", "window_start")
# The other window tables (migration 0018): partitioned the same way, kept
# whole by retention (nothing rolls them up yet).
WINDOWS: Final = (
    SPEND_WINDOW,
    *(
        Partitioned(t, "month", "window_start")
        for t in (
            "energy_window",
            "node_energy_window",
            "cache_window",
            "cache_eviction_window",
            "latency_window",
            "budget_window",
        )
    ),
)
# Every writer makes the partitions of all of them for the days it writes:
# one month made for every window table at once, whichever sink saw it first.
ALL: Final = (SEEN_EVENT, *WINDOWS)

_NAME: Final = re.compile(r"^(?P<table>[a-z_]+?)_p(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})?$")


def start_of(grain: Grain, day: date) -> date:
    return day if grain == "day" else day.replace(day=1)


def end_of(grain: Grain, start: date) -> date:
    return start + timedelta(days=1) if grain == "day" else next_month(start)


def name(p: Partitioned, start: date) -> str:
    return f"{p.table}_p{start:%Y%m%d}" if p.grain == "day" else f"{p.table}_p{start:%Y%m}"


def starts_of(name_: str, p: Partitioned) -> date | None:
    """The first day a partition of ``p`` holds, from its name (None: not one)."""
    found = _NAME.match(name_)
    if found is None or found["table"] != p.table or (found["d"] is None) != (p.grain == "month"):
        return None
    return date(int(found["y"]), int(found["m"]), int(found["d"] or 1))


def is_partition(name_: str) -> bool:
    return any(starts_of(name_, p) is not None for p in ALL)


def create_sql(p: Partitioned, start: date) -> str:
    """The partition holding ``start`` (created if missing). Its bounds are
    dates the code made, so they are written into the statement, which
    PostgreSQL cannot take as parameters."""
    lo, hi = start.isoformat(), end_of(p.grain, start).isoformat()
    if p.column != "event_day":  # timestamptz bounds: UTC midnights
        lo, hi = f"{lo} 00:00:00+00", f"{hi} 00:00:00+00"
    return (
        f"CREATE TABLE IF NOT EXISTS {name(p, start)} PARTITION OF {p.table}"
        f" FOR VALUES FROM ('{lo}') TO ('{hi}')"
    )


def needed(p: Partitioned, days: set[date]) -> set[date]:
    """The starts of the partitions holding ``days``."""
    return {start_of(p.grain, d) for d in days}


def dedup_horizon(now: datetime, max_event_age: timedelta, max_future: timedelta) -> date:
    """The first event day ``seen_event`` must keep. An event is admitted
    only if it is at most ``max_event_age`` old, so any event that can still
    be admitted has a day on or after ``now - max_event_age``; a day more
    for the worker whose clock runs ``max_future`` behind. Older days can
    never meet an admitted re-send: dropping them keeps "counted once"."""
    days = ceil((max_event_age + max_future) / timedelta(days=1)) + 1
    return (now - timedelta(days=days)).date()


def minute_horizon(now: datetime, months: int) -> date:
    """The first month whose minute windows are kept: the current month and
    the ``months`` before it."""
    first = now.date().replace(day=1)
    for _ in range(months):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def past(p: Partitioned, names: list[str], horizon: date) -> list[str]:
    """The partitions of ``p`` among ``names`` that end on or before ``horizon``."""
    out = []
    for n in names:
        start = starts_of(n, p)
        if start is not None and end_of(p.grain, start) <= horizon:
            out.append(n)
    return sorted(out)


@dataclass(frozen=True)
class Horizons:
    seen_event: date  # the first event day kept
    spend_window: date | None  # the first month of minutes kept (None: all)


def horizons(
    now: datetime, max_event_age: timedelta, max_future: timedelta, minute_months: int | None
) -> Horizons:
    return Horizons(
        dedup_horizon(now, max_event_age, max_future),
        None if minute_months is None else minute_horizon(now, minute_months),
    )


class Made:
    """The partitions this process made (or found made), so each batch asks
    only for the ones its days add. Retention drops only days no admitted
    event can have, so a partition known here is never one it dropped."""

    def __init__(self) -> None:
        self._known: set[tuple[str, date]] = set()

    def todo(self, days: Iterable[date]) -> list[tuple[tuple[str, date], str]]:
        """(key, CREATE statement) of every partition ``days`` need that this
        process has not made yet."""
        wanted = set(days)
        return [
            ((p.table, start), create_sql(p, start))
            for p in ALL
            for start in sorted(needed(p, wanted))
            if (p.table, start) not in self._known
        ]

    def made(self, keys: Iterable[tuple[str, date]]) -> None:
        self._known.update(keys)

    async def ensure(
        self, days: Iterable[date], create_each: Callable[[list[str]], Awaitable[None]]
    ) -> None:
        """Make what ``days`` need through a sink's ``create_each``, then know it."""
        todo = self.todo(days)
        await create_each([sql for _, sql in todo])
        self.made(key for key, _ in todo)
