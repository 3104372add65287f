"""Cache events into cache and eviction windows, exactly once by offset."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import astuple

from psycopg import AsyncConnection

from models.contracts import CacheEvent
from pipeline.cache_windows import cache_windows
from pipeline.dead_letter import DeadLetter
from pipeline.offset_sink import LineSink, decode_lines
from pipeline.usage_codec import Message

SINK = "cache"

_ADD_CACHE = """
INSERT INTO cache_window (window_start, tenant, route, layer, model, provider, hits, misses,
                          hit_tokens, miss_tokens, inserts, hit_output_tokens)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (window_start, tenant, route, layer, model, provider) DO UPDATE SET
    hits = cache_window.hits + excluded.hits,
    misses = cache_window.misses + excluded.misses,
    hit_tokens = cache_window.hit_tokens + excluded.hit_tokens,
    miss_tokens = cache_window.miss_tokens + excluded.miss_tokens,
    inserts = cache_window.inserts + excluded.inserts,
    hit_output_tokens = cache_window.hit_output_tokens + excluded.hit_output_tokens
"""
_ADD_EVICTIONS = """
INSERT INTO cache_eviction_window (window_start, evicting_tenant, evicted_tenant, layer, model,
                                   provider, evictions, evicted_tokens, evicted_output_tokens)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (window_start, evicting_tenant, evicted_tenant, layer, model, provider) DO UPDATE SET
    evictions = cache_eviction_window.evictions + excluded.evictions,
    evicted_tokens = cache_eviction_window.evicted_tokens + excluded.evicted_tokens,
    evicted_output_tokens = cache_eviction_window.evicted_output_tokens
                            + excluded.evicted_output_tokens
"""


class CacheSink(LineSink):
    def __init__(self, database_url: str, topic: str) -> None:
        super().__init__(database_url, topic, SINK)

    async def write(
        self, conn: AsyncConnection[tuple[object, ...]], messages: Sequence[Message]
    ) -> tuple[Counter[int], list[DeadLetter]]:
        decoded, dead = decode_lines(CacheEvent, messages)
        windows, evictions = cache_windows(line.value for line in decoded)
        async with conn.cursor() as cur:
            # The dataclasses' fields are in the statements' column order.
            await cur.executemany(_ADD_CACHE, [astuple(w) for w in windows])
            await cur.executemany(_ADD_EVICTIONS, [astuple(e) for e in evictions])
        return Counter(line.partition for line in decoded), dead
