"""A stateful property against the real sink: whatever mix of traffic,
re-sends, conflicts, late events, crashes before and after the commit, and
replays from the start happens, the database always equals the ledger of
the messages the sink has committed, and a zombie cannot write."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from models.prices import PriceBook
from pipeline.spend.batch import prepare
from pipeline.spend.ledger import compare, expected, window_from_row
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.spend.sink import SpendSink
from pipeline.stream.message import Message
from tests.factories import ADMISSION, event, line
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

BOOK = PriceBook(tuple(default_prices()))
FRAME = book_frame(BOOK)
TOPIC = "usage"


async def _apply(url: str, batch: list[Message]) -> None:
    sink = SpendSink(url, TOPIC)
    try:
        await sink.claim([0])
        await sink.apply(prepare(batch, BOOK, FRAME, ADMISSION), BOOK)
    finally:
        await sink.close()


class SinkMachine(RuleBasedStateMachine):
    """The log is one partition; ``position`` is where the consumer would
    resume (the committed group offset), never past the sink's offset."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        with psycopg.connect(url) as conn:
            conn.execute(
                "TRUNCATE spend_window, seen_event, sink_offset, unpriced_event, dead_letter"
            )
        self.log: list[Message] = []
        self.position = 0
        self.n = 0

    def _append(self, value: bytes) -> None:
        self.log.append(Message(0, len(self.log), value))

    @rule(tokens=st.integers(0, 5000), minute=st.integers(0, 5), tenant=st.sampled_from("ab"))
    def produce(self, tokens: int, minute: int, tenant: str) -> None:
        self.n += 1
        ts = (ADMISSION.now - timedelta(hours=1, minutes=minute)).isoformat()
        self._append(line(event(event_id=f"e{self.n}", tenant=tenant, input_tokens=tokens, ts=ts)))

    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        if self.log:
            self._append(data.draw(st.sampled_from(self.log)).value)

    @rule(data=st.data())
    def conflict(self, data: st.DataObject) -> None:
        if self.log:
            ev = json.loads(data.draw(st.sampled_from(self.log)).value)
            ev["output_tokens"] += 1
            self._append(json.dumps(ev).encode())

    @rule()
    def late_event(self) -> None:
        self.n += 1
        ts = (ADMISSION.now - timedelta(days=20)).isoformat()
        self._append(line(event(event_id=f"late{self.n}", ts=ts)))

    @rule(n=st.integers(1, 4))
    def deliver(self, n: int) -> None:
        batch = self.log[self.position : self.position + n]
        if batch:
            asyncio.run(_apply(self.url, batch))
            self.position += len(batch)

    @rule(n=st.integers(1, 4))
    def crash_before_commit(self, n: int) -> None:
        """Prepared, never applied: the consumer resumes where it was."""
        prepare(self.log[self.position : self.position + n], BOOK, FRAME, ADMISSION)

    @rule(n=st.integers(1, 4))
    def crash_after_commit(self, n: int) -> None:
        """Applied, never acked: the consumer resumes before this batch."""
        batch = self.log[self.position : self.position + n]
        if batch:
            asyncio.run(_apply(self.url, batch))

    @rule()
    def replay_from_start(self) -> None:
        self.position = 0

    @rule()
    def zombie(self) -> None:
        """A worker claimed the partition, then lost it to another: its
        batch must not be applied, whatever it holds."""
        if not self.log:
            return

        async def run() -> None:
            old, new = SpendSink(self.url, TOPIC), SpendSink(self.url, TOPIC)
            try:
                await old.claim([0])
                await new.claim([0])
                forged = [Message(0, len(self.log) + 10, line(event(event_id="zombie")))]
                applied = await old.apply(prepare(forged, BOOK, FRAME, ADMISSION), BOOK)
                assert applied.fenced == (0,) and applied.accepted == 0
            finally:
                await old.close()
                await new.close()

        asyncio.run(run())

    @invariant()
    def tables_equal_the_ledger_of_what_was_committed(self) -> None:
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT next_offset, events_accepted, events_duplicate, lines_dead_lettered"
                " FROM sink_offset"
            ).fetchone()
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            rows = cur.execute("SELECT * FROM spend_window").fetchall()
        committed = int(row[0]) if row else 0
        assert self.position <= committed
        want = expected(self.log[:committed], BOOK, ADMISSION)
        have = {w.key(): w for w in map(window_from_row, rows) if not w.is_zero()}
        assert compare(want.windows, have) == []
        if row:
            assert (int(row[1]), int(row[2]), int(row[3])) == (
                want.counted,
                want.duplicates,
                want.dead_lettered,
            )


def test_sink_state_machine(env: Env) -> None:
    run_state_machine_as_test(
        lambda: SinkMachine(env.database_url),
        settings=settings(
            max_examples=12,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


def test_a_resent_conflict_is_a_conflict_not_a_duplicate(env: Env) -> None:
    """Found by the state machine: an event counted in one batch, then twice
    the same changed payload in the next. Both copies re-use a counted key
    with another payload, so both are conflicts (the ledger agrees); the
    second is not a duplicate of a line that was rejected."""
    first = line(event(event_id="k1"))
    changed = line(event(event_id="k1", output_tokens=501))
    log = [Message(0, 0, first), Message(0, 1, changed), Message(0, 2, changed)]
    asyncio.run(_apply(env.database_url, log[:1]))
    asyncio.run(_apply(env.database_url, log[1:]))
    with psycopg.connect(env.database_url) as conn:
        row = conn.execute(
            "SELECT events_accepted, events_duplicate, lines_dead_lettered FROM sink_offset"
        ).fetchone()
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letter ORDER BY id")]
    want = expected(log, BOOK, ADMISSION)
    assert row == (want.counted, want.duplicates, want.dead_lettered) == (1, 0, 2)
    assert len(reasons) == 2 and all(r.startswith("conflict") for r in reasons)
