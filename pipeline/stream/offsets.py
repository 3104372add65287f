"""What every sink of this pipeline shares: one PostgreSQL connection used
by one transaction at a time, retries with backoff for every failure, and the
sink's offsets per (sink, topic, partition) with their owner epochs.

A sink's transaction locks its partitions' offset rows, applies nothing for a
partition another worker has claimed since (zombie fencing) or below the
stored next offset (a redelivery), writes its results, and advances the
offsets, all in one COMMIT; the stream acks only after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Generic, TypeVar

import polars as pl
import psycopg
from psycopg import AsyncConnection, AsyncCursor
from pydantic import BaseModel, ValidationError

from pipeline.stream.dead_letter import DeadLetter, dead_letter, reason_for
from pipeline.stream.ndjson import Message, split_lines

log = logging.getLogger(__name__)
T = TypeVar("T")
B = TypeVar("B")
M = TypeVar("M", bound=BaseModel)

# A partition's next owner bumps its epoch. lock_timeout: a zombie frozen in
# the middle of its transaction holds the row until the server's idle timeout
# ends that transaction; the claim waits in short steps meanwhile.
_CLAIM = """
INSERT INTO sink_offset AS o (sink, topic, partition, next_offset, owner_epoch)
SELECT %s, %s, p, 0, 1 FROM unnest(%s::int[]) AS p
ON CONFLICT (sink, topic, partition) DO UPDATE SET owner_epoch = o.owner_epoch + 1
RETURNING partition, owner_epoch
"""
# Postgres ends a transaction left idle this long, releasing a frozen
# worker's row locks; far above any healthy gap between statements.
_SESSION_SETUP = "SET idle_in_transaction_session_timeout = '20s'"
FENCED = 1 << 62  # an offset floor no message reaches


class PgSession:
    """One connection, one transaction at a time, every failure retried."""

    # Temp tables staged into, created once per connection.
    stage_ddl = ""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: AsyncConnection[tuple[object, ...]] | None = None
        # Callers in other tasks (the drain watcher, the price-book refresh)
        # wait their turn instead of interleaving two transactions' statements.
        self._lock = asyncio.Lock()
        self.faults: Counter[str] = Counter()

    async def _connection(self) -> AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=False, connect_timeout=10
            )
            async with conn.transaction():
                await conn.execute(_SESSION_SETUP)
                await conn.execute(self.stage_ddl)
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                async with self._lock:
                    return await op()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.faults["postgres_unavailable"] += 1
                log.warning("fault postgres_unavailable (%s); retrying in %.1fs", exc, delay)
            except psycopg.Error as exc:
                # Not a connection problem: still never ack what was not written.
                self.faults["sink_error"] += 1
                log.error("fault sink_error (%r); retrying in %.1fs", exc, delay)
            async with self._lock:
                await self._discard_connection()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _discard_connection(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None


class OffsetSink(PgSession):
    # How long a batch waits for its partitions' claim (see until_claimed).
    claim_wait_s = 60.0

    def __init__(self, database_url: str, topic: str, sink: str) -> None:
        super().__init__(database_url)
        self._topic = topic
        self._sink = sink
        self._epochs: dict[int, int] = {}  # partition -> the epoch we claimed
        self._claiming: set[int] = set()  # assigned to us, claim not done yet
        self._claims = asyncio.Condition()

    @property
    def topic(self) -> str:
        return self._topic

    async def applied(self) -> dict[int, int]:
        """partition -> the next offset this sink will apply."""

        async def query() -> dict[int, int]:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT partition, next_offset FROM sink_offset WHERE sink = %s AND topic = %s",
                    (self._sink, self._topic),
                )
                return {int(p): int(o) for p, o in await cur.fetchall()}  # type: ignore[call-overload]

        return await self._retrying(query)

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

        async def once() -> dict[int, int]:
            conn = await self._connection()
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '2s'")
                cur = await conn.execute(_CLAIM, (self._sink, self._topic, sorted(partitions)))
                return {int(p): int(e) for p, e in await cur.fetchall()}  # type: ignore[call-overload]

        epochs = await self._retrying(once)
        self._epochs.update(epochs)
        self._claiming.difference_update(partitions)
        async with self._claims:
            self._claims.notify_all()
        log.info("claimed partitions %s (epochs %s)", sorted(epochs), epochs)
        return epochs

    async def _lock_offsets(
        self, conn: AsyncConnection[tuple[object, ...]], partitions: Sequence[int]
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

    async def _write_dead(
        self, conn: AsyncConnection[tuple[object, ...]], dead: list[DeadLetter]
    ) -> None:
        if not dead:
            return
        async with conn.cursor() as cur:
            await cur.executemany(
                'INSERT INTO dead_letter (topic, partition, "offset", line, reason, raw)'
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self._topic, d.partition, d.offset, d.line, d.reason, d.raw) for d in dead],
            )


def merge_sql(table: str, key: tuple[str, ...], sums: tuple[str, ...]) -> str:
    """Add the rows staged in ``stage_<table>`` into ``table``: partial sums
    meet in an upsert, so every worker writes its share independently."""
    cols = ", ".join((*key, *sums))
    return (
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage_{table} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    )


def as_csv(frame: pl.DataFrame) -> str:
    return frame.write_csv(include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z")


async def copy_rows(
    cur: AsyncCursor[tuple[object, ...]], frame: pl.DataFrame, table: str, cols: tuple[str, ...]
) -> None:
    """COPY the ``cols`` of ``frame`` straight into ``table`` (append-only)."""
    if frame.is_empty():
        return
    async with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy:
        await copy.write(as_csv(frame.select(cols)))


async def copy_merge(
    cur: AsyncCursor[tuple[object, ...]],
    frame: pl.DataFrame,
    table: str,
    key: tuple[str, ...],
    sums: tuple[str, ...],
) -> None:
    """COPY ``frame`` (columns ``key`` + ``sums``) into ``stage_<table>`` and
    merge it: far cheaper than a row-by-row upsert for thousands of rows."""
    if frame.is_empty():
        return
    await copy_rows(cur, frame, f"stage_{table}", (*key, *sums))
    await cur.execute(merge_sql(table, key, sums))


@dataclass(frozen=True)
class Line(Generic[M]):
    partition: int
    offset: int
    line: int
    raw: bytes
    value: M

    def rejected(self, reason: str) -> DeadLetter:
        return dead_letter(self.partition, self.offset, self.line, reason, self.raw)


def decode_lines(
    model: type[M], messages: Sequence[Message]
) -> tuple[list[Line[M]], list[DeadLetter]]:
    """Every line of every message validated by ``model`` (the low-volume
    topics need no column-wise fast path), and the dead letters, with the
    contract's error as the reason."""
    values: list[Line[M]] = []
    dead: list[DeadLetter] = []
    for m in messages:
        for i, raw in enumerate(split_lines(m.value)):
            try:
                values.append(Line(m.partition, m.offset, i, raw, model.model_validate_json(raw)))
            except ValidationError as exc:
                dead.append(dead_letter(m.partition, m.offset, i, reason_for(exc), raw))
    return values, dead


@dataclass(frozen=True)
class LinesApplied:
    accepted: int = 0
    dead: tuple[DeadLetter, ...] = ()
    fenced: tuple[int, ...] = ()


class LineSink(OffsetSink, Generic[B]):
    """A sink for a topic whose batches need no dedup: each message is
    applied once by its offset. ``prepare`` is the pure part (decode,
    validate, sum; it runs in a thread, outside any transaction) and
    ``write`` turns its result into table rows inside the offset
    transaction."""

    def prepare(self, messages: Sequence[Message]) -> B:
        raise NotImplementedError

    async def write(
        self, conn: AsyncConnection[tuple[object, ...]], batch: B
    ) -> tuple[Counter[int], list[DeadLetter]]:
        raise NotImplementedError

    async def apply(self, messages: Sequence[Message], prepared: B | None = None) -> LinesApplied:
        """Apply ``messages``; ``prepared`` is ``prepare(messages)`` when the
        caller already ran it (it is used only if every message is fresh)."""
        await self.until_claimed(sorted({m.partition for m in messages}))
        return await self._retrying(lambda: self._apply_once(messages, prepared))

    async def _apply_once(self, messages: Sequence[Message], prepared: B | None) -> LinesApplied:
        partitions = sorted({m.partition for m in messages})
        conn = await self._connection()
        async with conn.transaction():
            rows = await self._lock_offsets(conn, partitions)
            fenced = self._fenced(rows)
            fresh = [
                m
                for m in messages
                if m.partition not in fenced and m.offset >= rows[m.partition][0]
            ]
            if not fresh:
                return LinesApplied(fenced=fenced)
            if prepared is None or len(fresh) < len(messages):
                # A redelivery or a fenced partition: only the rest counts.
                prepared = await asyncio.to_thread(self.prepare, fresh)
            accepted, dead = await self.write(conn, prepared)
            await self._write_dead(conn, dead)
            last: dict[int, int] = {}
            for m in fresh:
                last[m.partition] = max(m.offset, last.get(m.partition, -1))
            dead_by = Counter(d.partition for d in dead)
            async with conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE sink_offset SET next_offset = %s,"
                    " events_accepted = events_accepted + %s,"
                    " lines_dead_lettered = lines_dead_lettered + %s, updated_at = now()"
                    " WHERE sink = %s AND topic = %s AND partition = %s",
                    [
                        (last[p] + 1, accepted[p], dead_by[p], self._sink, self._topic, p)
                        for p in sorted(last)
                    ],
                )
        return LinesApplied(sum(accepted.values()), tuple(dead), fenced)
