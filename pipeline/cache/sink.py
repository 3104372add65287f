"""Cache events into cache and eviction windows, exactly once by offset."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import polars as pl

from pipeline.cache.codec import CACHE
from pipeline.cache.windows import EVICTION_KEY, WINDOW_KEY, window_frames
from pipeline.storage import partitions
from pipeline.stream.dead_letter import DeadLetter, PublishDead, table_only
from pipeline.stream.line_sink import LineSink
from pipeline.stream.message import Message, Position, count_by_partition
from pipeline.stream.ndjson import POSITION
from pipeline.stream.pg import Conn, copy_merge

SINK = "cache"

_CACHE_SUMS = ("hits", "misses", "hit_tokens", "miss_tokens", "inserts", "hit_output_tokens")
_EVICTION_SUMS = ("evictions", "evicted_tokens", "evicted_output_tokens")
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_cache_window (LIKE cache_window INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_cache_eviction_window
    (LIKE cache_eviction_window INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
"""


@dataclass(frozen=True)
class CacheBatch:
    events: pl.DataFrame  # decoded, with their positions
    windows: pl.DataFrame
    evictions: pl.DataFrame
    accepted: Counter[int]
    dead: list[DeadLetter]


def _batch(events: pl.DataFrame, dead: list[DeadLetter]) -> CacheBatch:
    windows, evictions = window_frames(events)
    return CacheBatch(events, windows, evictions, count_by_partition(events), dead)


class CacheSink(LineSink[CacheBatch]):
    stage_ddl = _STAGE_DDL

    def __init__(
        self, database_url: str, topic: str, *, publish_dead: PublishDead = table_only
    ) -> None:
        super().__init__(database_url, topic, SINK, publish_dead)
        self._partitions = partitions.Made()

    def prepare(self, messages: Sequence[Message]) -> CacheBatch:
        decoded = CACHE.decode(messages)
        return _batch(decoded.events, decoded.dead)

    async def before_commit(self, batch: CacheBatch) -> None:
        days = batch.events["ts"].dt.date().unique().to_list() if batch.events.height else []
        await self._partitions.ensure(days, self.create_each)

    def lines_of(self, batch: CacheBatch) -> list[Position]:
        return [(int(p), int(o), int(n)) for p, o, n in batch.events.select(*POSITION).iter_rows()]

    def without(self, batch: CacheBatch, lines: Collection[Position]) -> CacheBatch:
        gone = pl.DataFrame(list(lines), schema=POSITION, orient="row")
        return _batch(batch.events.join(gone, on=list(POSITION), how="anti"), batch.dead)

    async def write(self, conn: Conn, batch: CacheBatch) -> tuple[Counter[int], list[DeadLetter]]:
        async with conn.cursor() as cur:
            await copy_merge(cur, batch.windows, "cache_window", WINDOW_KEY, _CACHE_SUMS)
            await copy_merge(
                cur, batch.evictions, "cache_eviction_window", EVICTION_KEY, _EVICTION_SUMS
            )
        return batch.accepted, list(batch.dead)
