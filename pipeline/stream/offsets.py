"""The one offset transaction every sink commits in, and partition claims.

Each sink keeps, per (sink, topic, partition), the next offset it will
apply, ingest counters, and an owner epoch. A batch is applied by
:meth:`OffsetSink.commit`, in ONE transaction:

1. lock the batch's partitions' offset rows (FOR UPDATE, in partition order);
2. fence: apply nothing for a partition whose stored epoch is not the one
   this worker claimed (another worker owns it now: a zombie must not write);
3. skip: every message below the stored next offset was applied before (a
   batch redelivered after a crash, a rebalance or a group reset); a batch
   that starts *past* it means messages were never applied, which no retry
   fixes: :class:`OffsetGap` stops the process, to re-read from the group's
   committed offset, which never passes the sink's;
4. write: the sink's own rows, given the offsets below which nothing counts;
   then its dead letters, published to their topic first (the contract in
   :mod:`pipeline.stream.dead_letter`). A write the database refuses for a
   reason no retry fixes (a value out of range, a check violation) is
   isolated, not retried: the lines it refuses are found by bisection, each
   trial in a savepoint, and dead-lettered as ``db_rejected``; the rest
   applies (:meth:`OffsetSink._isolating`);
5. advance the offsets past the batch and add to the counters
   (accepted + duplicates + dead-lettered = lines consumed).

The stream acks the batch only after COMMIT. A crash before COMMIT leaves
nothing behind and the batch is redelivered; a crash after COMMIT but before
the ack redelivers a batch that step 3 skips. So each line counts once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import psycopg

from pipeline.stream import live_metrics as live
from pipeline.stream.dead_letter import DeadLetter, PublishDead, table_only
from pipeline.stream.message import Position
from pipeline.stream.pg import Conn, PgSession, refused_by_data
from pipeline.stream.redaction import mask

log = logging.getLogger(__name__)

# A partition's next owner bumps its epoch. lock_timeout: a zombie frozen in
# the middle of its transaction holds the row until the server's idle timeout
# ends that transaction; the claim waits in short steps meanwhile.
_CLAIM = """
INSERT INTO sink_offset AS o (sink, topic, partition, next_offset, owner_epoch)
SELECT %s, %s, p, 0, 1 FROM unnest(%s::int[]) AS p
ON CONFLICT (sink, topic, partition) DO UPDATE SET owner_epoch = o.owner_epoch + 1
RETURNING partition, owner_epoch, next_offset
"""
_ADVANCE = """
UPDATE sink_offset SET next_offset = %s, events_accepted = events_accepted + %s,
    events_duplicate = events_duplicate + %s, lines_dead_lettered = lines_dead_lettered + %s,
    updated_at = now(), max_event_ts = greatest(max_event_ts, %s)
WHERE sink = %s AND topic = %s AND partition = %s
"""
FENCED = 1 << 62  # an offset floor no message reaches


class OffsetGap(Exception):
    """A batch starts past the partition's next offset: the messages between
    were never applied. Not retried: the process must restart and re-read
    from the group's committed offset, which never passes the sink's."""


DB_REJECTED = "db_rejected"
# Trial writes one isolation may make: about 2 log2(n) per refused line, so
# a few refused lines in a batch of 40,000. Past it the refusal is raised.
MAX_TRIALS = 256


class Written(Protocol):
    """What a sink's write did, per partition, for the offset rows."""

    @property
    def accepted(self) -> Mapping[int, int]: ...
    @property
    def duplicates(self) -> Mapping[int, int]: ...
    @property
    def dead(self) -> Sequence[DeadLetter]: ...
    @property
    def newest(self) -> Mapping[int, datetime]: ...  # newest event time applied


W = TypeVar("W", bound=Written)
# The sink's writes inside the transaction, given each partition's floor
# (the offset below which nothing may count; FENCED for a fenced partition)
# and the lines refused: not applied, dead-lettered with the reason given.
Write = Callable[[Conn, Mapping[int, int], Mapping[Position, str]], Awaitable[W]]
# The lines a write would apply, given the floors (pure).
Positions = Callable[[Mapping[int, int]], Sequence[Position]]


class OffsetSink(PgSession):
    # How long a batch waits for its partitions' claim (see until_claimed).
    claim_wait_s = 60.0

    def __init__(
        self, database_url: str, topic: str, sink: str, publish_dead: PublishDead = table_only
    ) -> None:
        super().__init__(database_url)
        self._topic = topic
        self._sink = sink
        self._publish_dead = publish_dead
        self._epochs: dict[int, int] = {}  # partition -> the epoch we claimed
        self._claiming: set[int] = set()  # assigned to us, claim not done yet
        self._claims = asyncio.Condition()
        # partition -> next offset to apply, of the partitions this sink
        # claimed, as of its last claim or commit (what its lag is measured from).
        self.next_offsets: dict[int, int] = {}

    @property
    def topic(self) -> str:
        return self._topic

    async def applied(self) -> dict[int, int]:
        """partition -> the next offset this sink will apply."""
        rows = await self.query(
            "SELECT partition, next_offset FROM sink_offset WHERE sink = %s AND topic = %s",
            (self._sink, self._topic),
        )
        return {int(p): int(o) for p, o in rows}  # type: ignore[call-overload]

    def expect(self, partitions: Sequence[int]) -> None:
        """``partitions`` were just assigned to us: their batches wait for
        :meth:`claim` instead of meeting the previous epoch."""
        self._claiming.update(partitions)

    async def until_claimed(self, partitions: Sequence[int]) -> None:
        """Wait (up to ``claim_wait_s``) until every one of ``partitions`` has
        been claimed by this sink and no claim of them is pending.

        faust resumes fetching from a task of its own, which can deliver the
        first messages of an assignment before the assignment callback (the
        claim) has finished. Applied then, the batch would meet an epoch that
        is not ours yet: fenced, never acked, and so never redelivered until
        the next rebalance (a drain waited out its stall limit on one). A
        batch of partitions that never get claimed is fenced after the wait.
        """

        def owned() -> bool:
            return all(p in self._epochs and p not in self._claiming for p in partitions)

        if owned():
            return
        async with self._claims:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._claims.wait_for(owned), self.claim_wait_s)

    async def claim(self, partitions: Sequence[int]) -> dict[int, int]:
        """Take ownership of ``partitions``: bump their epochs, so a batch of
        any previous owner still in flight is fenced off, and remember ours."""
        if not partitions:
            return {}
        self.expect(partitions)

        async def once() -> dict[int, tuple[int, int]]:
            conn = await self._connection()
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '2s'")
                cur = await conn.execute(_CLAIM, (self._sink, self._topic, sorted(partitions)))
                return {
                    int(p): (int(e), int(o))  # type: ignore[call-overload]
                    for p, e, o in await cur.fetchall()
                }

        claimed = await self._retrying(once)
        epochs = {p: e for p, (e, _) in claimed.items()}
        self._epochs.update(epochs)
        self.next_offsets.update((p, o) for p, (_, o) in claimed.items())
        self._claiming.difference_update(partitions)
        async with self._claims:
            self._claims.notify_all()
        log.info("claimed partitions %s (epochs %s)", sorted(epochs), epochs)
        return epochs

    async def create_each(self, statements: Sequence[str]) -> None:
        """Run each CREATE in a short transaction of its own, before a batch's
        (DDL in the batch's would hold the parent table's lock to its
        COMMIT); retried like a write. One another worker made at the same
        moment exists, which is all that was wanted."""

        async def once() -> None:
            conn = await self._connection()
            for sql in statements:
                with suppress(psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                    async with conn.transaction():
                        await conn.execute(sql)

        if statements:
            await self._retrying(once)

    async def commit(
        self,
        first: Mapping[int, int],
        last: Mapping[int, int],
        write: Write[W],
        positions: Positions,
    ) -> tuple[W | None, tuple[int, ...]]:
        """Apply the batch whose partitions span ``first``..``last`` offsets
        through ``write``, in the offset transaction (module docstring);
        retried until it commits. ``positions`` names the lines ``write``
        would apply, for isolating those the database refuses. Returns what
        ``write`` returned (None when every message was applied before or is
        fenced) and the partitions found fenced, which the caller must not ack."""
        partitions = sorted(last)
        await self.until_claimed(partitions)
        return await self._retrying(
            lambda: self._commit_once(partitions, first, last, write, positions)
        )

    async def _commit_once(
        self,
        partitions: list[int],
        first: Mapping[int, int],
        last: Mapping[int, int],
        write: Write[W],
        positions: Positions,
    ) -> tuple[W | None, tuple[int, ...]]:
        conn = await self._connection()
        async with conn.transaction():
            rows = await self._lock_offsets(conn, partitions)
            fenced = self._fenced(rows)
            floor = {p: FENCED if p in fenced else rows[p][0] for p in partitions}
            fresh = [p for p in partitions if last[p] >= floor[p]]
            if not fresh:
                return None, fenced  # every message was applied before, or not ours
            gaps = {p: rows[p][0] for p in fresh if 0 < rows[p][0] < first[p]}
            if gaps:
                self.faults["offset_gap"] += 1
                raise OffsetGap(f"batch starts past the applied offsets {gaps}: {dict(first)}")
            written = await self._isolating(conn, floor, write, positions)
            if written.dead:
                await self._write_dead(conn, written.dead)
                await self._publish_dead(written.dead)
            await self._advance(conn, fresh, last, written)
        # Committed: what the process reports from now on.
        self.next_offsets.update((p, last[p] + 1) for p in fresh)
        live.record_applied(
            self._topic,
            sum(last[p] - max(first[p], floor[p]) + 1 for p in fresh),
            written.accepted,
            written.duplicates,
            written.dead,
        )
        return written, fenced

    async def _isolating(
        self, conn: Conn, floor: Mapping[int, int], write: Write[W], positions: Positions
    ) -> W:
        """``write``, in a savepoint; if the database refuses it for a value
        (a data exception or an integrity violation: :func:`refused_by_data`),
        the refused lines are found by bisection (each trial rolled back) and
        the write is made without them, dead-lettering them as
        ``db_rejected``. A refusal no line explains (every line fails, or
        none does, or the trials run out) is raised: retried, then stalled."""
        refused: dict[Position, str] = {}
        trials = _Trials(conn, floor, write)
        while True:
            try:
                async with conn.transaction():
                    return await write(conn, floor, refused)
            except psycopg.Error as exc:
                left = [p for p in positions(floor) if p not in refused]
                if not refused_by_data(exc) or not left:
                    raise
                why = f"{DB_REJECTED}: {_described(exc)}"
                self.faults[DB_REJECTED] += 1
                log.error("fault db_rejected (%s); isolating the lines it refuses", why)
                bad = await _bisect(left, partial(trials.applies, refused, left))
                if trials.left <= 0 or (len(bad) == len(left) > 1) or not bad:
                    raise
            refused.update((p, why) for p in bad)

    async def _lock_offsets(
        self, conn: Conn, partitions: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        """partition -> (next offset, owner epoch), rows locked until COMMIT."""
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO sink_offset (sink, topic, partition, next_offset)"
                " VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING",
                [(self._sink, self._topic, p) for p in partitions],
            )
        cur = await conn.execute(
            "SELECT partition, next_offset, owner_epoch FROM sink_offset"
            " WHERE sink = %s AND topic = %s AND partition = ANY(%s)"
            " ORDER BY partition FOR UPDATE",
            (self._sink, self._topic, list(partitions)),
        )
        return {
            int(p): (int(o), int(e))  # type: ignore[call-overload]
            for p, o, e in await cur.fetchall()
        }

    def _fenced(self, rows: dict[int, tuple[int, int]]) -> tuple[int, ...]:
        """Partitions whose stored epoch is not the one this sink claimed: a
        newer owner took them, so nothing of them may be applied (or acked)."""
        fenced = tuple(p for p in sorted(rows) if rows[p][1] != self._epochs.get(p))
        if fenced:
            self.faults["fenced"] += 1
            log.warning("fault fenced: %s partitions %s have a newer owner", self._topic, fenced)
        return fenced

    async def _write_dead(self, conn: Conn, dead: Sequence[DeadLetter]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                'INSERT INTO dead_letter (topic, partition, "offset", line, reason, raw)'
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self._topic, d.partition, d.offset, d.line, d.reason, d.raw) for d in dead],
            )

    async def _advance(
        self, conn: Conn, partitions: list[int], last: Mapping[int, int], written: Written
    ) -> None:
        dead: dict[int, int] = {}
        for d in written.dead:
            dead[d.partition] = dead.get(d.partition, 0) + 1
        async with conn.cursor() as cur:
            await cur.executemany(
                _ADVANCE,
                [
                    (
                        last[p] + 1,
                        written.accepted.get(p, 0),
                        written.duplicates.get(p, 0),
                        dead.get(p, 0),
                        written.newest.get(p),
                        self._sink,
                        self._topic,
                        p,
                    )
                    for p in partitions
                ],
            )


class _Trials:
    """Trial writes of a part of a batch, rolled back, at most MAX_TRIALS."""

    def __init__(self, conn: Conn, floor: Mapping[int, int], write: Write[Any]) -> None:
        self._conn, self._floor, self._write = conn, floor, write
        self.left = MAX_TRIALS

    async def applies(
        self, refused: Mapping[Position, str], lines: Sequence[Position], part: Sequence[Position]
    ) -> bool:
        """Does the write succeed with only ``part`` of ``lines``? Past the
        trial budget every part counts as failing, and the caller raises."""
        if self.left <= 0:
            return False
        self.left -= 1
        keep = set(part)
        without = {**refused, **{p: "" for p in lines if p not in keep}}
        try:
            async with self._conn.transaction():
                await self._write(self._conn, self._floor, without)
                raise psycopg.Rollback()
        except psycopg.Error as exc:
            if not refused_by_data(exc):
                raise
            return False
        return True


async def _bisect(
    lines: Sequence[Position], applies: Callable[[Sequence[Position]], Awaitable[bool]]
) -> list[Position]:
    """The lines that make a write fail, given that writing all of ``lines``
    fails: halves that write alone are cleared, the rest split again. Empty
    when no single line explains the failure (both halves pass alone)."""
    if len(lines) <= 1:
        return list(lines)
    half = len(lines) // 2
    bad: list[Position] = []
    for part in (lines[:half], lines[half:]):
        if not await applies(part):
            bad += await _bisect(part, applies)
    return bad


def _described(exc: psycopg.Error) -> str:
    """An error in one line, for a dead letter's reason: its SQLSTATE and
    the server's first line (credential-shaped values masked), never the
    statement text."""
    first = (exc.diag.message_primary or str(exc) or type(exc).__name__).splitlines()[0]
    return mask(f"{exc.sqlstate or type(exc).__name__} {first}")[:300]


def applied_offsets(
    conn: psycopg.Connection[tuple[object, ...]], sink: str, topic: str
) -> dict[int, int]:
    """partition -> the next offset ``sink`` will apply (progress bars)."""
    rows = conn.execute(
        "SELECT partition, next_offset FROM sink_offset WHERE sink = %s AND topic = %s",
        (sink, topic),
    ).fetchall()
    return {int(p): int(o) for p, o in rows}  # type: ignore[call-overload]


def forget_offsets(database_url: str) -> None:
    """A new embedded broker starts with empty topics at offset 0, so offsets
    the sinks stored for the previous one would skip the new messages. Dedup
    keys stay: events replayed into the new broker still count once."""
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("SELECT to_regclass('sink_offset')").fetchone()
        if exists and exists[0]:
            conn.execute("DELETE FROM sink_offset")
