"""The idempotent PostgreSQL sink for spend windows.

Per batch, ONE transaction:
  1. lock this sink's offset rows of the batch's partitions (FOR UPDATE) and
     check the owner epoch: a partition another worker has claimed since we
     did is fenced, and none of its rows are applied by us (zombie fencing);
  2. drop every event and dead letter below the stored next offset — a batch
     replayed after a crash, a rebalance or a group reset is skipped here;
  3. record event keys in ``seen_event``; a key already there with the same
     payload fingerprint is a duplicate (counted once, across batches and
     restarts), with another fingerprint a conflict (dead-lettered);
  4. add the window partial sums, store unpriced events and dead letters;
  5. advance the offsets and the ingest counters.
The stream acks the batch only after COMMIT. A crash anywhere before COMMIT
leaves nothing behind and the batch is redelivered; a crash after COMMIT but
before the ack redelivers a batch that step 2 skips. So each event counts
exactly once.

Every failure is retried with backoff, forever: not acking is always safe,
while letting the error escape the agent would make faust ack the batch and
lose it. Each retry is logged and counted in ``faults``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar

import polars as pl
import psycopg
from psycopg import AsyncConnection

from models.prices import PriceBook, PriceEntry
from pipeline.dead_letter import DeadLetter
from pipeline.recent_keys import RecentKeys
from pipeline.spend_batch import (
    CONFLICT,
    PreparedBatch,
    already_applied,
    count_by_partition,
    without,
)
from pipeline.spend_windows import COUNTERS, KEY, SpendWindow, with_window

log = logging.getLogger(__name__)
T = TypeVar("T")

SINK = "spend"

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_event (
    idx bigint NOT NULL, event_key uuid NOT NULL, ts timestamptz NOT NULL,
    fingerprint uuid NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_window (LIKE spend_window INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
"""

# Each staged key is probed in the primary key index (a correlated EXISTS is
# a per-row index lookup; a join let the planner hash the whole, ever-growing
# table every batch). Every CTE reads the snapshot from before the insert, so
# `dup` marks keys already applied and the rest are inserted plainly: 3-4x
# cheaper than ON CONFLICT DO NOTHING, whose speculative insertion costs per
# row. Two workers inserting the same new key at once cannot both win: the
# primary key fails one transaction, which is retried and then sees the key.
# A key seen before with another fingerprint is a conflict; rows from before
# fingerprints existed (NULL) count as the same payload.
_DEDUP = """
WITH marked AS MATERIALIZED (
    SELECT s.idx, s.event_key, s.ts, s.fingerprint,
           EXISTS (SELECT 1 FROM seen_event e WHERE e.event_key = s.event_key) AS dup,
           (SELECT e.fingerprint FROM seen_event e WHERE e.event_key = s.event_key) AS seen_fp
    FROM stage_event s
), ins AS (
    INSERT INTO seen_event (event_key, event_ts, fingerprint)
    SELECT event_key, ts, fingerprint FROM marked WHERE NOT dup
)
SELECT idx, coalesce(seen_fp = fingerprint, true) FROM marked WHERE dup
"""
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
_FENCED = 1 << 62  # an offset floor no message reaches

_MERGE_WINDOWS = (
    f"INSERT INTO spend_window ({', '.join((*KEY, *COUNTERS))}) "
    f"SELECT {', '.join((*KEY, *COUNTERS))} FROM stage_window "
    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = spend_window.{c} + excluded.{c}" for c in COUNTERS)
    + ", updated_at = now()"
)

_UNPRICED_COLS = (
    "event_key",
    "ts",
    "window_start",
    "tenant",
    "route",
    "feature",
    "provider",
    "model",
    "attempt",
    "failed",
    "batch",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


class OffsetGap(Exception):
    """A batch starts past the partition's next offset: the messages between
    were never applied. Not retried: the process must restart and re-read
    from the group's committed offset, which never passes the sink's."""


@dataclass(frozen=True)
class Applied:
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    conflicts: int = 0
    fenced: tuple[int, ...] = ()  # partitions this worker no longer owns


def _tokens(events: pl.DataFrame) -> pl.Series:
    """What the recent-keys cache remembers: the key and the payload together,
    so only an identical re-send is vouched for."""
    return events.select(pl.col("event_key") + pl.col("fingerprint")).to_series()


def _csv(frame: pl.DataFrame) -> str:
    return frame.write_csv(include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z")


class SpendSink:
    def __init__(
        self, database_url: str, topic: str, *, sink: str = SINK, recent_keys: int = 1_000_000
    ) -> None:
        self._url = database_url
        self._topic = topic
        self._sink = sink
        self._conn: AsyncConnection[tuple[object, ...]] | None = None
        # One connection, one transaction at a time: callers in other tasks
        # (the drain watcher, the price-book refresh) wait their turn instead
        # of interleaving statements of two transactions.
        self._lock = asyncio.Lock()
        self._recent = RecentKeys(recent_keys)
        self._epochs: dict[int, int] = {}  # partition -> the epoch we claimed
        self.faults: Counter[str] = Counter()

    async def _connection(self) -> AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=False, connect_timeout=10
            )
            async with conn.transaction():
                await conn.execute(_SESSION_SETUP)
                await conn.execute(_STAGE_DDL)
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def price_book(self) -> tuple[PriceBook, int]:
        """The whole price book and its revision (the highest entry id)."""
        return await self._retrying(self._load_price_book)

    async def _load_price_book(self) -> tuple[PriceBook, int]:
        conn = await self._connection()
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT model, provider, effective_from, input_per_mtok, output_per_mtok,"
                " cache_read_per_mtok, cache_write_per_mtok, batch_discount, id"
                " FROM price_book ORDER BY id"
            )
            rows = await cur.fetchall()
        entries = tuple(
            PriceEntry(
                model=r[0],
                provider=r[1],
                effective_from=r[2],
                input_per_mtok=r[3],
                output_per_mtok=r[4],
                cache_read_per_mtok=r[5],
                cache_write_per_mtok=r[6],
                batch_discount=r[7],
            )
            for r in rows
        )
        return PriceBook(entries), max((int(r[8]) for r in rows), default=0)  # type: ignore[call-overload]

    async def price_book_revision(self) -> int:
        async def query() -> int:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute("SELECT coalesce(max(id), 0) FROM price_book")
                row = await cur.fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]

        return await self._retrying(query)

    async def caught_up(self, targets: dict[int, int]) -> bool:
        """Whether every partition has been applied up to its target end offset."""

        async def query() -> bool:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT partition, next_offset FROM sink_offset WHERE sink = %s AND topic = %s",
                    (self._sink, self._topic),
                )
                done = {int(p): int(o) for p, o in await cur.fetchall()}  # type: ignore[call-overload]
            return all(done.get(p, 0) >= end for p, end in targets.items())

        result: bool = await self._retrying(query)
        return result

    async def apply(self, batch: PreparedBatch, book: PriceBook) -> Applied:
        return await self._retrying(lambda: self._apply_once(batch, book))

    async def claim(self, partitions: Sequence[int]) -> dict[int, int]:
        """Take ownership of ``partitions``: bump their epochs, so a batch of
        any previous owner still in flight is fenced off, and remember ours."""
        if not partitions:
            return {}

        async def once() -> dict[int, int]:
            conn = await self._connection()
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '2s'")
                cur = await conn.execute(_CLAIM, (self._sink, self._topic, sorted(partitions)))
                return {int(p): int(e) for p, e in await cur.fetchall()}  # type: ignore[call-overload]

        epochs = await self._retrying(once)
        self._epochs.update(epochs)
        log.info("claimed partitions %s (epochs %s)", sorted(epochs), epochs)
        return epochs

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

    async def _apply_once(self, batch: PreparedBatch, book: PriceBook) -> Applied:
        conn = await self._connection()
        async with conn.transaction():
            rows = await self._lock_offsets(conn, batch.partitions)
            fenced = tuple(p for p in batch.partitions if rows[p][1] != self._epochs.get(p))
            if fenced:
                self.faults["fenced"] += 1
                log.warning(
                    "fault fenced: partitions %s belong to a newer owner; not applying them",
                    fenced,
                )
            floor = {p: _FENCED if p in fenced else rows[p][0] for p in batch.partitions}
            fresh = [p for p in batch.partitions if batch.last_offsets[p] >= floor[p]]
            if not fresh:
                return Applied(fenced=fenced)  # every message was applied before, or not ours
            gaps = {p: rows[p][0] for p in fresh if 0 < rows[p][0] < batch.first_offsets[p]}
            if gaps:
                self.faults["offset_gap"] += 1
                raise OffsetGap(
                    f"batch starts past the applied offsets {gaps}: {batch.first_offsets}"
                )
            applied_before = already_applied(batch.events, floor)
            events = batch.events.with_row_index("idx")
            dup_idx, conflict_idx = await self._dedup(conn, events.filter(~applied_before))
            is_dup = events["idx"].is_in(dup_idx)
            is_conflict = events["idx"].is_in(conflict_idx)
            drop = applied_before | is_dup | is_conflict
            kept, windows = without(batch, drop, book)
            dead = [d for d in batch.dead if d.offset >= floor[d.partition]]
            dead += batch.conflicts(events.filter(is_conflict), "an event already counted")
            conflicts = sum(1 for d in dead if d.reason.startswith(CONFLICT))
            if conflicts:
                self.faults["conflict"] += conflicts
                log.warning(
                    "fault conflict: %d events re-used a key with another payload", conflicts
                )
            await self._write_windows(conn, windows)
            await self._write_unpriced(conn, kept.filter(pl.col("price_id").is_null()))
            await self._write_dead(conn, dead)
            duplicates = batch.duplicates + count_by_partition(events.filter(is_dup))
            for p in fenced:
                duplicates.pop(p, None)
            await self._advance(conn, batch, fresh, kept, dead, duplicates)
        # Committed: only now may the cache vouch for these keys.
        self._recent.add(_tokens(kept))
        return Applied(
            accepted=kept.height,
            duplicates=sum(duplicates[p] for p in fresh),
            dead_lettered=len(dead),
            conflicts=conflicts,
            fenced=fenced,
        )

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

    async def _dedup(
        self, conn: AsyncConnection[tuple[object, ...]], unique: pl.DataFrame
    ) -> tuple[list[int], list[int]]:
        """Record the keys of ``unique`` in seen_event; return the idx of the
        rows already there with the same payload (duplicates) and with another
        payload (conflicts).

        Fast path: keys this worker committed recently with the same payload
        are duplicates for sure; the rest are COPYed straight into seen_event,
        which is 2x cheaper than staging and probing. If one of them was there
        after all (a re-send older than the cache, one applied by another
        worker, or a conflict), the primary key fails the COPY, its savepoint
        rolls it back, and the careful path stages the keys and probes each.
        """
        if unique.is_empty():
            return [], []
        cached = self._recent.known(_tokens(unique))
        dup_idx = unique.filter(cached)["idx"].to_list()
        rest = unique.filter(~cached)
        if rest.is_empty():
            return dup_idx, []
        try:
            async with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    "COPY seen_event (event_key, event_ts, fingerprint) FROM STDIN (FORMAT csv)"
                ) as copy,
            ):
                await copy.write(_csv(rest.select("event_key", "ts", "fingerprint")))
            return dup_idx, []
        except psycopg.errors.UniqueViolation:
            pass
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY stage_event (idx, event_key, ts, fingerprint) FROM STDIN (FORMAT csv)"
            ) as copy:
                await copy.write(_csv(rest.select("idx", "event_key", "ts", "fingerprint")))
            await cur.execute(_DEDUP)
            found = await cur.fetchall()
        same = [int(i) for i, s in found if s]  # type: ignore[call-overload]
        other = [int(i) for i, s in found if not s]  # type: ignore[call-overload]
        return dup_idx + same, other

    async def _write_windows(
        self, conn: AsyncConnection[tuple[object, ...]], windows: list[SpendWindow]
    ) -> None:
        if not windows:
            return
        cols = (*KEY, *COUNTERS)
        async with conn.cursor() as cur:
            async with cur.copy(f"COPY stage_window ({', '.join(cols)}) FROM STDIN") as copy:
                for w in windows:
                    await copy.write_row([getattr(w, c) for c in cols])
            await cur.execute(_MERGE_WINDOWS)

    async def _write_unpriced(
        self, conn: AsyncConnection[tuple[object, ...]], unpriced: pl.DataFrame
    ) -> None:
        if unpriced.is_empty():
            return
        # One expression per column of _UNPRICED_COLS, in its order.
        derived = {"failed": pl.col("status") != "ok"}
        rows = with_window(unpriced).select(
            derived.get(c, pl.col(c)).alias(c) for c in _UNPRICED_COLS
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO unpriced_event ({', '.join(_UNPRICED_COLS)})"
                " VALUES (%s::uuid, "
                + ", ".join(["%s"] * (len(_UNPRICED_COLS) - 1))
                + ") ON CONFLICT DO NOTHING",
                rows.rows(),
            )

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

    async def _advance(
        self,
        conn: AsyncConnection[tuple[object, ...]],
        batch: PreparedBatch,
        partitions: list[int],
        kept: pl.DataFrame,
        dead: list[DeadLetter],
        duplicates: Counter[int],
    ) -> None:
        """Move offsets past this batch and add to the ingest counters
        (accepted + duplicates + dead-lettered = lines produced)."""
        accepted = count_by_partition(kept)
        dead_by: dict[int, int] = defaultdict(int)
        for d in dead:
            dead_by[d.partition] += 1
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE sink_offset SET next_offset = %s, events_accepted = events_accepted + %s,"
                " events_duplicate = events_duplicate + %s,"
                " lines_dead_lettered = lines_dead_lettered + %s, updated_at = now()"
                " WHERE sink = %s AND topic = %s AND partition = %s",
                [
                    (
                        batch.last_offsets[p] + 1,
                        accepted[p],
                        duplicates[p],
                        dead_by[p],
                        self._sink,
                        self._topic,
                        p,
                    )
                    for p in partitions
                ],
            )
