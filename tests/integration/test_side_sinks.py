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

from models.prices import PriceBook
from pipeline.cache.sink import CacheSink
from pipeline.energy.attribution import largest_remainder
from pipeline.energy.finalizer import _READY, EnergyFinalizer, _split
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.spend.batch import prepare
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.spend.sink import SpendSink
from pipeline.stream.line_sink import LineSink
from pipeline.stream.message import Message
from tests.factories import ADMISSION, event, line
from tests.integration.conftest import Env, make_partitions

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


def test_a_batch_that_comes_before_its_partitions_claim_waits_for_it(env: Env) -> None:
    """faust can deliver an assignment's first messages while the claim is
    still running: the batch waits for the claim and is applied, instead of
    being fenced by an epoch that is not ours yet (and never redelivered)."""

    async def run() -> tuple[Any, Any, bool]:
        sink = TelemetrySink(env.database_url, "tel")
        stranger = TelemetrySink(env.database_url, "tel")
        stranger.claim_wait_s = 0.5
        try:
            sink.expect([0])  # assigned; the claim has not run yet
            applying = asyncio.create_task(sink.apply([Message(0, 0, _telemetry(3)[0])]))
            await asyncio.sleep(0.5)
            waited = not applying.done()
            await sink.claim([0])
            # A sink that never claims the partition is fenced after its wait.
            foreign = await stranger.apply([Message(0, 1, _telemetry(3)[1])])
            return await applying, foreign, waited
        finally:
            await sink.close()
            await stranger.close()

    applied, foreign, waited = asyncio.run(run())
    assert waited
    assert (applied.fenced, applied.accepted) == ((), 1)
    assert (foreign.fenced, foreign.accepted) == ((0,), 0)
    assert env.query("SELECT next_offset FROM sink_offset WHERE topic = 'tel'") == [(1,)]


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


_usage_rows = st.lists(
    st.tuples(
        st.sampled_from(["acme", "globex", "initech"]),  # tenant: the key's middle column
        st.sampled_from(["miss", "hit"]),  # cache_state: its last
        st.integers(1, 4),  # attempts
        st.sampled_from([0, 1, 7, 10**6, 3 * 10**12]),  # weight: zeros, ties, huge products
    ),
    max_size=12,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(measured=st.sampled_from([0, 1, 5, 42_000_000, 9 * 10**15]), rows=_usage_rows)
def test_the_database_splits_as_largest_remainder_does(
    env: Env, measured: int, rows: list[tuple[str, str, int, int]]
) -> None:
    """The finalizer's split runs in SQL; pipeline.energy.attribution.largest_remainder is
    the definition it must match, share for share, with several rows per
    key (energy_usage is append-only), zero weights and ties."""
    make_partitions(env.database_url, T0.date())
    with psycopg.connect(env.database_url) as conn:
        conn.execute("TRUNCATE node_energy_window, energy_usage, energy_window")
        conn.execute(
            "INSERT INTO node_energy_window (window_start, node_id, measured_mj, unmeasured_ms,"
            " attributed_mj, idle_mj, final, splits) VALUES (%s, 'n1', %s, 0, 0, 0, false, 0)",
            (T0, measured),
        )
        for tenant, state, attempts, weight in rows:
            conn.execute(
                "INSERT INTO energy_usage (window_start, node_id, model, tenant, route, feature,"
                " batch_bucket, cache_state, attempts, input_tokens, output_tokens,"
                " cache_read_tokens, weight) VALUES (%s, 'n1', 'm', %s, '/r', 'f', '1', %s,"
                " %s, 0, 0, 0, %s)",
                (T0, tenant, state, attempts, weight),
            )

    async def split() -> int:
        finalizer = EnergyFinalizer(env.database_url, timedelta(0))
        try:
            return await finalizer.run()
        finally:
            await finalizer.close()

    assert asyncio.run(split()) == 1

    keys: dict[tuple[str, str], list[int]] = {}
    for tenant, state, attempts, weight in rows:
        k = keys.setdefault((tenant, state), [0, 0])
        k[0] += attempts
        k[1] += weight
    ordered = sorted(keys)  # the key's order: tenant, then cache_state
    weights = [keys[k][1] for k in ordered]
    got = env.query(
        "SELECT tenant, cache_state, attempts, energy_mj FROM energy_window"
        " WHERE source = 'measured' ORDER BY tenant, cache_state"
    )
    ((attributed, idle, final),) = env.query(
        "SELECT attributed_mj, idle_mj, final FROM node_energy_window"
    )
    if sum(weights) > 0:
        shares = largest_remainder(measured, weights)
        assert got == [(*k, keys[k][0], s) for k, s in zip(ordered, shares, strict=True)]
        assert (attributed, idle) == (measured, 0)
    else:  # nothing to share it by: all idle
        assert got == [] and (attributed, idle) == (0, measured)
    assert final is True
    # One folded row per key is left for a later re-split.
    assert env.query("SELECT count(*) FROM energy_usage") == [(len(keys),)]


def test_a_split_the_database_keeps_rejecting_stalls_rather_than_retrying_for_ever(
    env: Env,
) -> None:
    """The drain ends with ``split_all``: a statement that can never succeed
    (here its table is gone) must give up after the stall limit, and the same
    call splits the window once the table is back."""
    make_partitions(env.database_url, T0.date())
    with psycopg.connect(env.database_url) as conn:
        conn.execute(
            "INSERT INTO node_energy_window (window_start, node_id, measured_mj, unmeasured_ms,"
            " attributed_mj, idle_mj, final, splits) VALUES (%s, 'n1', 42, 0, 0, 0, false, 0)",
            (T0,),
        )
        conn.execute("ALTER TABLE energy_window RENAME TO energy_window_away")

    async def split_all() -> tuple[bool, int]:
        finalizer = EnergyFinalizer(env.database_url, timedelta(0))
        try:
            done = await asyncio.wait_for(finalizer.split_all(stall_s=1.0), timeout=60)
            return done, finalizer.faults["sink_error"]
        finally:
            await finalizer.close()

    done, errors = asyncio.run(split_all())
    assert done is False and errors >= 2  # retried, then gave up
    assert env.query("SELECT final FROM node_energy_window") == [(False,)]
    with psycopg.connect(env.database_url) as conn:
        conn.execute("ALTER TABLE energy_window_away RENAME TO energy_window")
    assert asyncio.run(split_all()) == (True, 0)
    assert env.query("SELECT idle_mj, final FROM node_energy_window") == [(42, True)]


def test_late_usage_committed_during_a_split_reopens_the_window(env: Env) -> None:
    """The finalizer has locked a ready node-window and is splitting it when
    a spend batch brings a late attempt for that window: the batch waits for
    the split to commit, then re-opens the window, so the next split gives
    the late attempt its share instead of leaving its row unsplit."""
    book = PriceBook(tuple(default_prices()))
    frame = book_frame(book)
    start = datetime(2025, 11, 1, 11, 0, tzinfo=UTC)
    samples = [
        json.dumps(
            {
                "node_id": "busy",
                "gpu": "0",
                "ts": (start + timedelta(seconds=s)).isoformat(),
                "power_w": 700.0,
                "energy_mj": 10**9 + 700_000 * s,
            }
        ).encode()
        for s in range(0, 65, 5)
    ]
    asyncio.run(
        _feed(TelemetrySink(env.database_url, "busy-tel"), [[Message(0, 0, b"\n".join(samples))]])
    )

    def attempt(n: int) -> Message:
        usage = event(
            event_id=f"busy-{n}",
            ts=(start + timedelta(seconds=10 + n)).isoformat(),
            node_id="busy",
            model="qwen3-32b",
            provider="self-hosted",
        )
        return Message(0, n, line(usage))

    async def run() -> bool:
        spend = SpendSink(env.database_url, "busy-usage")
        try:
            await spend.claim([0])
            await spend.apply(prepare([attempt(0)], book, frame, ADMISSION), book)
            connecting = psycopg.AsyncConnection.connect(env.database_url)
            async with await connecting as splitting, splitting.transaction():
                # The finalizer's own statements, with a pause between them.
                ready = await (await splitting.execute(_READY, (timedelta(days=1), 10))).fetchall()
                assert [(w, n) for w, n, _ in ready] == [(start, "busy")]
                late = asyncio.ensure_future(
                    spend.apply(prepare([attempt(1)], book, frame, ADMISSION), book)
                )
                await asyncio.sleep(1.0)
                waited = not late.done()
                await _split(splitting, [(w, n, int(m)) for w, n, m in ready])
            await late
            return waited
        finally:
            await spend.close()

    assert asyncio.run(run())
    assert env.query("SELECT final FROM node_energy_window WHERE node_id = 'busy'") == [(False,)]

    async def split_again() -> None:
        finalizer = EnergyFinalizer(env.database_url, timedelta(days=1))
        try:
            assert await finalizer.run() == 1
        finally:
            await finalizer.close()

    asyncio.run(split_again())
    [(attempts, energy, measured, attributed, idle)] = env.query(
        "SELECT sum(e.attempts), sum(e.energy_mj), n.measured_mj, n.attributed_mj, n.idle_mj"
        " FROM energy_window e JOIN node_energy_window n USING (window_start, node_id)"
        " WHERE e.node_id = 'busy' AND e.source = 'measured'"
        " GROUP BY n.measured_mj, n.attributed_mj, n.idle_mj"
    )
    assert attempts == 2 and energy == attributed and attributed + idle == measured > 0
