"""``finops reconcile --ledger``: recompute the windows from the retained
input log and name every window the database holds differently.

The adapter around ``pipeline.spend.ledger``: reads the topic from the broker and
the windows, counters and price book from PostgreSQL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from pipeline.spend.ledger import Ledger, WindowDiff, WindowKey, compare, expected, window_from_row
from pipeline.spend.price_store import load_book
from pipeline.spend.sink import SINK
from pipeline.spend.windows import SpendWindow
from pipeline.storage import db
from pipeline.stream.admission import Admission
from pipeline.stream.kafka import read_topic


@dataclass(frozen=True)
class Counters:
    accepted: int
    duplicates: int
    dead_lettered: int


@dataclass(frozen=True)
class Reconciliation:
    ledger: Ledger
    diffs: list[WindowDiff]
    counters: Counters

    @property
    def balanced(self) -> bool:
        c, want = self.counters, self.ledger
        return (c.accepted, c.duplicates, c.dead_lettered) == (
            want.counted,
            want.duplicates,
            want.dead_lettered,
        )

    @property
    def lost(self) -> int:
        """Attempts the ledger has and the windows lack, window by window."""
        return sum(max(0, int(d.expected) - int(d.stored)) for d in self._attempts())

    @property
    def double_counted(self) -> int:
        return sum(max(0, int(d.stored) - int(d.expected)) for d in self._attempts())

    def _attempts(self) -> list[WindowDiff]:
        return [d for d in self.diffs if d.column == "attempts"]

    @property
    def ok(self) -> bool:
        return not self.diffs and self.balanced


def stored_windows(database_url: str) -> dict[WindowKey, SpendWindow]:
    with psycopg.connect(database_url) as conn:
        rows = conn.cursor(row_factory=dict_row).execute("SELECT * FROM spend_window").fetchall()
    windows = (window_from_row(r) for r in rows)
    return {w.key(): w for w in windows if not w.is_zero()}


def sink_counters(database_url: str, topic: str) -> Counters:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(events_accepted), 0), coalesce(sum(events_duplicate), 0),"
            " coalesce(sum(lines_dead_lettered), 0) FROM sink_offset"
            " WHERE sink = %s AND topic = %s",
            (SINK, topic),
        ).fetchone()
    assert row is not None
    return Counters(int(row[0]), int(row[1]), int(row[2]))


def reconcile_ledger(
    kafka_url: str, database_url: str, topic: str, admission: Admission
) -> Reconciliation:
    messages = asyncio.run(read_topic(kafka_url, topic))
    engine = db.engine(database_url)
    try:
        book = load_book(engine)
    finally:
        engine.dispose()
    ledger = expected(messages, book, admission)
    return Reconciliation(
        ledger,
        compare(ledger.windows, stored_windows(database_url)),
        sink_counters(database_url, topic),
    )
