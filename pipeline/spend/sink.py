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

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial

import polars as pl
import psycopg
from psycopg import AsyncConnection, AsyncCursor

from models.prices import PriceBook, PriceEntry
from pipeline.energy.usage import TOKEN_SUMS, USAGE_KEY, USAGE_SUMS
from pipeline.spend.batch import (
    CONFLICT,
    PreparedBatch,
    already_applied,
    energy_of,
    without,
)
from pipeline.spend.budgets import CAPS_SCHEMA, budget_parts
from pipeline.spend.budgets import KEY as BUDGET_KEY
from pipeline.spend.budgets import SUMS as BUDGET_SUMS
from pipeline.spend.latency import latency_parts
from pipeline.spend.recent_keys import RecentKeys
from pipeline.spend.request_costs import COLUMNS as REQUEST_COLUMNS
from pipeline.spend.request_costs import retry_costs
from pipeline.spend.windows import COUNTERS, KEY, SpendWindow, with_window
from pipeline.stream import pg_binary
from pipeline.stream.dead_letter import DeadLetter
from pipeline.stream.ndjson import count_by_partition
from pipeline.stream.offsets import FENCED, OffsetSink, as_csv, copy_merge, copy_rows

log = logging.getLogger(__name__)

SINK = "spend"

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_event (
    idx bigint NOT NULL, event_key uuid NOT NULL, ts timestamptz NOT NULL,
    fingerprint uuid NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_window (LIKE spend_window INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_energy_window (LIKE energy_window INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_latency_window (LIKE latency_window INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_request_cost (LIKE request_cost INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_budget_window (LIKE budget_window INCLUDING DEFAULTS)
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
_MERGE_WINDOWS = (
    f"INSERT INTO spend_window ({', '.join((*KEY, *COUNTERS))}) "
    f"SELECT {', '.join((*KEY, *COUNTERS))} FROM stage_window "
    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = spend_window.{c} + excluded.{c}" for c in COUNTERS)
    + ", updated_at = now()"
)

_ESTIMATE_COLS = (*USAGE_KEY, "source")


_LATENCY_KEY = ("window_start", "route", "model", "bucket")
_MERGE_REQUEST_COST = f"""
INSERT INTO request_cost ({", ".join(REQUEST_COLUMNS)})
SELECT {", ".join(REQUEST_COLUMNS)} FROM stage_request_cost
ON CONFLICT (tenant, request_id) DO UPDATE SET
    retries = request_cost.retries + excluded.retries,
    retry_cost_usd = request_cost.retry_cost_usd + excluded.retry_cost_usd,
    first_ts = least(request_cost.first_ts, excluded.first_ts),
    last_ts = greatest(request_cost.last_ts, excluded.last_ts)
"""


async def _add_retry_costs(cur: AsyncCursor[tuple[object, ...]], costs: pl.DataFrame) -> None:
    if costs.is_empty():
        return
    cols = ", ".join(REQUEST_COLUMNS)
    async with cur.copy(f"COPY stage_request_cost ({cols}) FROM STDIN (FORMAT csv)") as copy:
        await copy.write(as_csv(costs.select(REQUEST_COLUMNS)))
    await cur.execute(_MERGE_REQUEST_COST)


_ESTIMATE_SUMS = ("attempts", *TOKEN_SUMS, "energy_mj")
# Usage that reaches an already split node-window (late) makes the finalizer
# split it again, so the late attempts get their share: an adjustment.
# First the node-windows are locked, in key order: the telemetry sink's
# order, so the two cannot deadlock (it sorts in Python, by code point,
# which is the "C" collation's order whatever the database's default). A
# finalizer that is splitting one holds its row, and this waits for that
# split to commit, so the re-open below sees the window final. Without the
# wait, a split whose snapshot missed this batch's rows could mark the
# window final after the re-open had found it open, and leave them
# unsplit. The finalizer skips locked rows, so it never waits on this.
_LOCK_WINDOWS = """
SELECT 1 FROM node_energy_window n
JOIN unnest(%s::timestamptz[], %s::text[]) AS s(window_start, node_id)
    ON n.window_start = s.window_start AND n.node_id = s.node_id
ORDER BY n.window_start, n.node_id COLLATE "C"
FOR UPDATE OF n
"""
_REOPEN = """
UPDATE node_energy_window n SET final = false
FROM unnest(%s::timestamptz[], %s::text[]) AS s(window_start, node_id)
WHERE n.final AND n.window_start = s.window_start AND n.node_id = s.node_id
"""

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
    "invalid",
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


class SpendSink(OffsetSink):
    stage_ddl = _STAGE_DDL

    def __init__(
        self, database_url: str, topic: str, *, sink: str = SINK, recent_keys: int = 1_000_000
    ) -> None:
        super().__init__(database_url, topic, sink)
        self._recent = RecentKeys(recent_keys)

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

    async def reference_revision(self) -> tuple[int, str]:
        """The price book's revision and the route catalog's (when it was
        loaded): one cheap query, asked before every batch."""

        async def query() -> tuple[int, str]:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT (SELECT coalesce(max(id), 0) FROM price_book),"
                    " (SELECT coalesce(max(loaded_at)::text, '') || '/' || count(*)"
                    "  FROM route_catalog)"
                )
                row = await cur.fetchone()
            assert row is not None
            return int(row[0]), str(row[1])  # type: ignore[call-overload]

        return await self._retrying(query)

    async def budget_caps(self) -> pl.DataFrame:
        """The route catalog's token caps, for pipeline.budgets."""

        async def query() -> pl.DataFrame:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute("SELECT route, input_cap, output_cap FROM route_catalog")
                rows = await cur.fetchall()
            return pl.DataFrame(rows, schema=CAPS_SCHEMA, orient="row")

        return await self._retrying(query)

    async def apply(self, batch: PreparedBatch, book: PriceBook) -> Applied:
        await self.until_claimed(batch.partitions)
        return await self._retrying(lambda: self._apply_once(batch, book))

    async def _apply_once(self, batch: PreparedBatch, book: PriceBook) -> Applied:
        conn = await self._connection()
        async with conn.transaction():
            rows = await self._lock_offsets(conn, batch.partitions)
            fenced = self._fenced(rows)
            floor = {p: FENCED if p in fenced else rows[p][0] for p in batch.partitions}
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
            # A later copy in this batch of an event that conflicts is a
            # conflict too, not a duplicate of a line that was rejected.
            fresh_repeats = batch.repeats.filter(~already_applied(batch.repeats, floor))
            repeat_conflicts = fresh_repeats["event_key"].is_in(
                events.filter(is_conflict)["event_key"].implode()
            )
            dead += batch.conflicts(
                fresh_repeats.filter(repeat_conflicts), "an event already counted"
            )
            fresh_repeats = fresh_repeats.filter(~repeat_conflicts)
            conflicts = sum(1 for d in dead if d.reason.startswith(CONFLICT))
            if conflicts:
                self.faults["conflict"] += conflicts
                log.warning(
                    "fault conflict: %d events re-used a key with another payload", conflicts
                )
            await self._write_windows(conn, windows)
            async with conn.cursor() as cur:
                latency = batch.part_of(kept, batch.latency, latency_parts)
                await copy_merge(cur, latency, "latency_window", _LATENCY_KEY, ("calls",))
                retries = batch.part_of(kept, batch.retries, partial(retry_costs, book=book))
                await _add_retry_costs(cur, retries)
                budgets = batch.part_of(kept, batch.budgets, partial(budget_parts, caps=batch.caps))
                await copy_merge(cur, budgets, "budget_window", BUDGET_KEY, BUDGET_SUMS)
            energy = energy_of(batch, kept)
            if energy is not None:
                await self._write_energy(conn, *energy)
            await self._write_unpriced(conn, kept.filter(pl.col("price_id").is_null()))
            await self._write_dead(conn, dead)
            duplicates = count_by_partition(fresh_repeats) + count_by_partition(
                events.filter(is_dup)
            )
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
                    "COPY seen_event (event_key, event_ts, fingerprint) FROM STDIN (FORMAT binary)"
                ) as copy,
            ):
                keys = rest.select("event_key", "ts", "fingerprint")
                await copy.write(pg_binary.encode(keys, uuids=("event_key", "fingerprint")))
            return dup_idx, []
        except psycopg.errors.UniqueViolation:
            pass
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY stage_event (idx, event_key, ts, fingerprint) FROM STDIN (FORMAT csv)"
            ) as copy:
                await copy.write(as_csv(rest.select("idx", "event_key", "ts", "fingerprint")))
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

    async def _write_energy(
        self,
        conn: AsyncConnection[tuple[object, ...]],
        usage: pl.DataFrame,
        estimates: pl.DataFrame,
    ) -> None:
        async with conn.cursor() as cur:
            await copy_rows(cur, usage, "energy_usage", (*USAGE_KEY, *USAGE_SUMS))
            await copy_merge(cur, estimates, "energy_window", _ESTIMATE_COLS, _ESTIMATE_SUMS)
            if not usage.is_empty():
                windows = usage.select("window_start", "node_id").unique()
                keys = (windows["window_start"].to_list(), windows["node_id"].to_list())
                await cur.execute(_LOCK_WINDOWS, keys)
                await cur.execute(_REOPEN, keys)

    async def _write_unpriced(
        self, conn: AsyncConnection[tuple[object, ...]], unpriced: pl.DataFrame
    ) -> None:
        if unpriced.is_empty():
            return
        # One expression per column of _UNPRICED_COLS, in its order.
        derived = {
            "failed": pl.col("status") != "ok",
            "invalid": pl.col("status") == "invalid_output",
        }
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
        newest = dict(kept.group_by("partition").agg(pl.col("ts").max()).iter_rows())
        dead_by: dict[int, int] = defaultdict(int)
        for d in dead:
            dead_by[d.partition] += 1
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE sink_offset SET next_offset = %s, events_accepted = events_accepted + %s,"
                " events_duplicate = events_duplicate + %s,"
                " lines_dead_lettered = lines_dead_lettered + %s, updated_at = now(),"
                " max_event_ts = greatest(max_event_ts, %s)"
                " WHERE sink = %s AND topic = %s AND partition = %s",
                [
                    (
                        batch.last_offsets[p] + 1,
                        accepted[p],
                        duplicates[p],
                        dead_by[p],
                        newest.get(p),
                        self._sink,
                        self._topic,
                        p,
                    )
                    for p in partitions
                ],
            )
