"""Retention, run by the worker every hour and by ``finops db retention``:
the partitions the next days and months need are made ahead, and those past
their horizon are dropped: ``seen_event`` days past the dedup horizon
(:func:`pipeline.storage.partitions.dedup_horizon`), and, when
``FINOPS_MINUTE_RETENTION_MONTHS`` is set, ``spend_window`` months past it.
The hourly and daily roll-ups are never dropped: they keep every amount."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, text

from models.months import midnight, next_month
from pipeline.storage import partitions as parts
from pipeline.storage.partitions import Horizons, Partitioned

log = logging.getLogger(__name__)

_CHILDREN = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = :parent AND p.relnamespace = current_schema()::regnamespace
"""


@dataclass(frozen=True)
class Retained:
    horizons: Horizons
    dropped: dict[str, list[str]]  # table -> partitions dropped (or that would be)
    kept: dict[str, int]  # table -> partitions left


def children(conn: Connection, p: Partitioned) -> list[str]:
    return sorted(conn.execute(text(_CHILDREN), {"parent": p.table}).scalars())


def ensure_ahead(conn: Connection, now: datetime) -> None:
    """Today's and tomorrow's seen_event days, this and next month of every
    window table: writers never wait on making them at midnight."""
    today = now.date()
    days = {today, today + timedelta(days=1)}
    months = {today, next_month(today.replace(day=1))}
    for p in parts.ALL:
        for start in parts.needed(p, days if p.grain == "day" else months):
            conn.execute(text(parts.create_sql(p, start)))


def _awaits_a_price(engine: Engine, p: Partitioned, name: str) -> bool:
    """Does a month of minutes still hold events without a price? Kept
    until they are repriced: a reprice adds to the minutes (and through
    them to the roll-ups), so it needs the month's rows."""
    start = parts.starts_of(name, p)
    assert start is not None
    with engine.connect() as conn:
        waiting = conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM unpriced_event WHERE ts >= :s AND ts < :e)"),
            {"s": midnight(start), "e": midnight(parts.end_of(p.grain, start))},
        ).scalar_one()
    if waiting:
        log.warning("retention: keeping %s: some of its events wait for a price", name)
    return bool(waiting)


def run(engine: Engine, h: Horizons, now: datetime, *, dry_run: bool = False) -> Retained:
    dropped: dict[str, list[str]] = {}
    kept: dict[str, int] = {}
    if not dry_run:
        with engine.begin() as conn:
            ensure_ahead(conn, now)
    for p, horizon in ((parts.SEEN_EVENT, h.seen_event), (parts.SPEND_WINDOW, h.spend_window)):
        with engine.connect() as conn:
            names = children(conn, p)
        gone = [] if horizon is None else parts.past(p, names, horizon)
        if p is parts.SPEND_WINDOW:
            gone = [n for n in gone if not _awaits_a_price(engine, p, n)]
        for name in [] if dry_run else gone:
            # One short transaction each: DROP locks the parent until COMMIT,
            # and a sink waiting behind it must not wait long.
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))
                conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
            log.info("retention: dropped %s", name)
        dropped[p.table] = gone
        kept[p.table] = len(names) - len(gone)
    return Retained(h, dropped, kept)
