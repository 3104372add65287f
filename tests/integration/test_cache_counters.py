"""Cache counters through a real worker: `finops simulate` (whose cache
nodes send per-minute counters by default) stores exactly the windows the
per-operation events give, and `--cache-per-op` sends those events
themselves, one line per operation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pipeline.cache.codec import CACHE
from pipeline.cache.windows import window_frames
from pipeline.testbed.bench import raw_consume
from pipeline.testbed.simulate.side import cache_events
from pipeline.testbed.simulate.usage import SimConfig, generate
from tests.factories import messages
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

START = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
SUMS = "hits, misses, hit_tokens, miss_tokens, inserts, hit_output_tokens"


@pytest.mark.parametrize("flag", [(), ("--cache-per-op",)], ids=["counters", "per-op"])
def test_counters_store_the_windows_of_the_events_they_count(
    env: Env, flag: tuple[str, ...]
) -> None:
    args = ("--rate", "6", "--duration", "1200", "--start", START.isoformat())
    env.finops("simulate", *args, "--incident", "cache-thrash", *flag)
    env.finops("worker", "--drain")

    # What the events themselves give, one per operation, computed in-process
    # from the same seeded traffic (the CLI's default seed).
    cfg = SimConfig(start=START, duration_s=1200, rate=6, seed=7, incident="cache-thrash")
    lookups = list(cache_events(list(generate(cfg)), cfg))
    windows, evictions = window_frames(CACHE.decode(messages(lookups, per_message=100)).events)
    expected = sorted(windows.iter_rows())
    expected_evictions = sorted(evictions.iter_rows())

    stored = env.query(
        f"SELECT window_start, tenant, route, layer, model, provider, {SUMS} FROM cache_window"
    )
    # (Sorted here: the database's text collation need not sort like Python.)
    assert sorted(tuple(r) for r in stored) == expected
    stored_evictions = env.query(
        "SELECT window_start, evicting_tenant, evicted_tenant, layer, model, provider,"
        " evictions, evicted_tokens, evicted_output_tokens FROM cache_eviction_window"
    )
    assert sorted(tuple(r) for r in stored_evictions) == expected_evictions != []
    # ... from counters: fewer lines reached the topic than operations; or
    # one line per operation.
    published = asyncio.run(raw_consume(env.kafka_url, [f"{env.topic}-cache"]))
    if flag:
        assert published.events == len(lookups)
    else:
        assert 0 < published.events < len(lookups)
