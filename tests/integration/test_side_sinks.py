"""The telemetry and cache sinks: replaying any prefix of their log changes
nothing (offsets in the same transaction), and a zombie cannot write."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cache_sink import CacheSink
from pipeline.energy_finalizer import EnergyFinalizer
from pipeline.ndjson_codec import Message
from pipeline.offset_sink import LineSink
from pipeline.telemetry_sink import TelemetrySink
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TABLES = "node_energy_window, gpu_last_sample, cache_window, cache_eviction_window, sink_offset"


def _telemetry(n: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "node_id": "n1",
                "gpu": str(g),
                "ts": (T0 + timedelta(seconds=7 * i)).isoformat(),
                "power_w": 300.0 + i,
                "energy_mj": 10**6 * i if g == 0 else None,
            }
        ).encode()
        for i in range(n)
        for g in (0, 1)
    ]


def _cache(n: int) -> list[bytes]:
    ops = ["hit", "miss", "insert", "evict"]
    return [
        json.dumps(
            {
                "node_id": "n1",
                "ts": (T0 + timedelta(seconds=11 * i)).isoformat(),
                "tenant": "t",
                "route": "/r",
                "layer": "prefix",
                "op": ops[i % 4],
                "tokens": 10 * i,
                "owner_tenant": "o",
            }
        ).encode()
        for i in range(n)
    ]


def _snapshot(url: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in (
                "node_energy_window",
                "gpu_last_sample",
                "cache_window",
                "cache_eviction_window",
            )
        ]


async def _feed(sink: LineSink, batches: list[list[Message]]) -> None:
    try:
        await sink.claim([0])
        for batch in batches:
            await sink.apply(batch)
    finally:
        await sink.close()


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(per_message=st.integers(1, 4), batch=st.integers(1, 3), data=st.data())
def test_replaying_any_prefix_changes_nothing(
    env: Env, per_message: int, batch: int, data: st.DataObject
) -> None:
    results = []
    for make, sink_type, topic in (
        (_telemetry, TelemetrySink, "tel"),
        (_cache, CacheSink, "cache"),
    ):
        lines = make(12)
        msgs = [
            Message(0, i, b"\n".join(lines[k : k + per_message]))
            for i, k in enumerate(range(0, len(lines), per_message))
        ]
        batches = [msgs[i : i + batch] for i in range(0, len(msgs), batch)]
        cut = data.draw(st.integers(0, len(batches)))
        with psycopg.connect(env.database_url) as conn:
            conn.execute(f"TRUNCATE {TABLES}")
        asyncio.run(_feed(sink_type(env.database_url, topic), batches))
        once = _snapshot(env.database_url)
        with psycopg.connect(env.database_url) as conn:
            conn.execute(f"TRUNCATE {TABLES}")
        asyncio.run(_feed(sink_type(env.database_url, topic), batches[:cut]))
        asyncio.run(_feed(sink_type(env.database_url, topic), [[m] for m in msgs]))
        results.append((once, _snapshot(env.database_url)))
    for once, again in results:
        assert again == once
    # Energy really was measured: 12 samples per GPU, 7 s apart.
    assert sum(r[2] for r in results[0][0][0]) > 0


def test_a_zombie_telemetry_sink_writes_nothing(env: Env) -> None:
    async def run() -> tuple[Any, Any]:
        old, new = TelemetrySink(env.database_url, "tel"), TelemetrySink(env.database_url, "tel")
        try:
            await old.claim([0])
            await new.claim([0])
            return await old.apply([Message(0, 0, b"\n".join(_telemetry(3)))]), None
        finally:
            await old.close()
            await new.close()

    applied, _ = asyncio.run(run())
    assert applied.fenced == (0,) and applied.accepted == 0
    assert _snapshot(env.database_url)[1] == []


def test_a_window_whose_gpu_went_silent_is_split_after_the_timeout(env: Env) -> None:
    """GPU 1 stops reporting 30 s into the minute: no sample ever covers the
    window's end, so only the finalize timeout can close it."""
    lines = [
        json.dumps(
            {
                "node_id": "quiet",
                "gpu": gpu,
                "ts": (T0 + timedelta(seconds=s)).isoformat(),
                "power_w": 500.0,
                "energy_mj": 10**9 + 500_000 * s,
            }
        ).encode()
        for gpu, last in (("0", 90), ("1", 30))
        for s in range(0, last + 1, 5)
    ]

    def split_with(timeout: timedelta) -> tuple[object, ...]:
        async def run() -> None:
            finalizer = EnergyFinalizer(env.database_url, timeout)
            try:
                while await finalizer.run():
                    pass
            finally:
                await finalizer.close()

        asyncio.run(run())
        (window,) = env.query(
            "SELECT measured_mj, attributed_mj, idle_mj, final FROM node_energy_window"
            " WHERE node_id = 'quiet' AND window_start = %s",
            (T0,),
        )
        return window

    asyncio.run(
        _feed(TelemetrySink(env.database_url, "quiet-tel"), [[Message(0, 0, b"\n".join(lines))]])
    )
    # GPU 1's last sample (T0 + 30 s) never covers the window's end.
    assert split_with(timedelta(days=100_000))[3] is False
    measured, attributed, idle, final = split_with(timedelta(minutes=5))
    assert final is True and attributed + idle == measured and measured > 0
