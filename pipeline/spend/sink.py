"""The idempotent PostgreSQL sink for spend windows: it writes what
:func:`pipeline.spend.batch.settle` decided, in the offset transaction of
:mod:`pipeline.stream.offsets` (lock, fence, skip, write, advance):

1. the batch's event keys go into ``seen_event``; the keys already there
   come back as duplicates (same payload fingerprint) or conflicts (another
   one), which is all the sink tells ``settle``;
2. ``settle`` (pure) returns every row to write: the window partial sums,
   the rules' inputs (latency, retry costs, token-budget breaches), the
   energy weights and estimates, unpriced events and dead letters;
3. they are written, one statement per table, and the offsets advance.

Each event counts exactly once: see :mod:`pipeline.stream.offsets` for why a
crash at any point leaves nothing counted twice or lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import AsyncCursor

from models.prices import PriceBook
from pipeline.energy.usage import TOKEN_SUMS, USAGE_KEY, USAGE_SUMS
from pipeline.spend.batch import (
    UNPRICED_COLUMNS,
    PreparedBatch,
    Settled,
    positions,
    settle,
    unseen,
)
from pipeline.spend.budgets import KEY as BUDGET_KEY
from pipeline.spend.budgets import SUMS as BUDGET_SUMS
from pipeline.spend.recent_keys import RecentKeys
from pipeline.spend.request_costs import COLUMNS as REQUEST_COLUMNS
from pipeline.spend.windows import COUNTERS, KEY
from pipeline.storage import partitions
from pipeline.stream import pg_binary
from pipeline.stream.dead_letter import PublishDead, table_only
from pipeline.stream.message import Position
from pipeline.stream.offsets import OffsetSink
from pipeline.stream.pg import Conn, as_csv, copy_merge, copy_rows, merge_sql

log = logging.getLogger(__name__)

SINK = "spend"

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_event (
    idx bigint NOT NULL, event_key uuid NOT NULL, ts timestamptz NOT NULL,
    fingerprint uuid NOT NULL, event_day date NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_spend_window (LIKE spend_window INCLUDING DEFAULTS)
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

# Each staged key is probed in the primary key index of its day's partition
# (a re-send carries its original's time, so its day; a key re-used with
# another payload on another day is not found, and counts: the one case
# day partitions give up; see docs/design/guarantees.md). A correlated EXISTS is
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
    SELECT s.idx, s.event_key, s.ts, s.fingerprint, s.event_day,
           EXISTS (SELECT 1 FROM seen_event e
                   WHERE e.event_key = s.event_key AND e.event_day = s.event_day) AS dup,
           (SELECT e.fingerprint FROM seen_event e
            WHERE e.event_key = s.event_key AND e.event_day = s.event_day) AS seen_fp
    FROM stage_event s
), ins AS (
    INSERT INTO seen_event (event_key, event_ts, fingerprint, event_day)
    SELECT event_key, ts, fingerprint, event_day FROM marked WHERE NOT dup
)
SELECT idx, coalesce(seen_fp = fingerprint, true) FROM marked WHERE dup
"""
_DAY = pl.col("ts").dt.date().alias("event_day")  # UTC: ts is a UTC datetime
_MERGE_WINDOWS = merge_sql("spend_window", KEY, COUNTERS, extra="updated_at = now()")
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
    await copy_rows(cur, costs, "stage_request_cost", REQUEST_COLUMNS)
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

_INSERT_UNPRICED = (
    f"INSERT INTO unpriced_event ({', '.join(UNPRICED_COLUMNS)}) VALUES (%s::uuid, "
    + ", ".join(["%s"] * (len(UNPRICED_COLUMNS) - 1))
    + ") ON CONFLICT DO NOTHING"
)


async def _write_energy(
    cur: AsyncCursor[tuple[object, ...]], usage: pl.DataFrame, estimates: pl.DataFrame
) -> None:
    await copy_rows(cur, usage, "energy_usage", (*USAGE_KEY, *USAGE_SUMS))
    await copy_merge(cur, estimates, "energy_window", _ESTIMATE_COLS, _ESTIMATE_SUMS)
    if not usage.is_empty():
        windows = usage.select("window_start", "node_id").unique()
        keys = (windows["window_start"].to_list(), windows["node_id"].to_list())
        await cur.execute(_LOCK_WINDOWS, keys)
        await cur.execute(_REOPEN, keys)


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
        self,
        database_url: str,
        topic: str,
        *,
        sink: str = SINK,
        recent_keys: int = 250_000,
        publish_dead: PublishDead = table_only,
    ) -> None:
        super().__init__(database_url, topic, sink, publish_dead)
        self._recent = RecentKeys(recent_keys)
        self._partitions = partitions.Made()

    async def apply(self, batch: PreparedBatch, book: PriceBook) -> Applied:
        # The seen_event days and window months the batch needs.
        days = batch.events["ts"].dt.date().unique().to_list()
        await self._partitions.ensure(days, self.create_each)

        async def write(
            conn: Conn, floor: Mapping[int, int], refused: Mapping[Position, str]
        ) -> Settled:
            same, other = await self._dedup(conn, unseen(batch, floor, refused))
            settled = settle(batch, book, floor, same, other, refused)
            await self._write(conn, settled)
            return settled

        def lines(floor: Mapping[int, int]) -> list[Position]:
            return positions(unseen(batch, floor))

        settled, fenced = await self.commit(batch.first_offsets, batch.last_offsets, write, lines)
        if settled is None:
            return Applied(fenced=fenced)
        if settled.conflicts:
            self.faults["conflict"] += settled.conflicts
            log.warning(
                "fault conflict: %d events re-used a key with another payload", settled.conflicts
            )
        # Committed: only now may the cache vouch for these keys.
        self._recent.add(_tokens(settled.events))
        return Applied(
            accepted=settled.events.height,
            duplicates=sum(settled.duplicates.values()),
            dead_lettered=len(settled.dead),
            conflicts=settled.conflicts,
            fenced=fenced,
        )

    async def _write(self, conn: Conn, s: Settled) -> None:
        async with conn.cursor() as cur:
            if s.windows:
                cols = (*KEY, *COUNTERS)
                copying = f"COPY stage_spend_window ({', '.join(cols)}) FROM STDIN"
                async with cur.copy(copying) as copy:
                    for w in s.windows:
                        await copy.write_row([getattr(w, c) for c in cols])
                await cur.execute(_MERGE_WINDOWS)
            await copy_merge(cur, s.latency, "latency_window", _LATENCY_KEY, ("calls",))
            await _add_retry_costs(cur, s.retries)
            await copy_merge(cur, s.budgets, "budget_window", BUDGET_KEY, BUDGET_SUMS)
            if s.energy is not None:
                await _write_energy(cur, *s.energy)
            if not s.unpriced.is_empty():
                await cur.executemany(_INSERT_UNPRICED, s.unpriced.rows())

    async def _dedup(self, conn: Conn, unique: pl.DataFrame) -> tuple[list[int], list[int]]:
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
                    "COPY seen_event (event_key, event_ts, fingerprint, event_day)"
                    " FROM STDIN (FORMAT binary)"
                ) as copy,
            ):
                keys = rest.select("event_key", "ts", "fingerprint", _DAY)
                await copy.write(pg_binary.encode(keys, uuids=("event_key", "fingerprint")))
            return dup_idx, []
        except psycopg.errors.UniqueViolation:
            pass
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY stage_event (idx, event_key, ts, fingerprint, event_day)"
                " FROM STDIN (FORMAT csv)"
            ) as copy:
                await copy.write(as_csv(rest.select("idx", "event_key", "ts", "fingerprint", _DAY)))
            await cur.execute(_DEDUP)
            found = await cur.fetchall()
        same = [int(i) for i, s in found if s]  # type: ignore[call-overload]
        other = [int(i) for i, s in found if not s]  # type: ignore[call-overload]
        return dup_idx + same, other
