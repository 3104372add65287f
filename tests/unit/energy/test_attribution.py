"""Energy attribution: the hand-computed case, the edge cases, and
conservation for arbitrary interleavings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.energy.attribution import (
    Attempt,
    Sample,
    Weights,
    attribute,
    batch_bucket,
    largest_remainder,
    split_by_window,
)
from pipeline.energy.usage import usage_weights
from pipeline.spend.codec import decode
from tests.factories import event, messages

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _samples(watts: int, seconds: int, every: int = 5, node: str = "n1", counter: bool = True):
    return [
        Sample(
            node,
            "0",
            T0 + timedelta(seconds=s),
            Decimal(watts),
            watts * s * 1000 if counter else None,
        )
        for s in range(0, seconds + 1, every)
    ]


def _attempt(tenant: str, out: int, inp: int, cached: int = 0, second: int = 10) -> Attempt:
    return Attempt((tenant,), "n1", T0 + timedelta(seconds=second), inp, out, cached)


def test_700_watts_for_a_minute_split_between_two_tenants_to_the_millijoule() -> None:
    # 700 W x 60 s = 42,000 J = 42,000,000 mJ.
    # Weights (decode 100, prefill 10, cached 1; no batch size: the same
    # factor for both, which cancels):
    #   acme:   500 out, 4000 in of which 3000 cached -> 100*500 + 10*1000 + 1*3000 = 63,000
    #   globex: 100 out, 1000 in, none cached         -> 100*100 + 10*1000          = 20,000
    # acme   = 42,000,000 * 63000 / 83000 = 31,879,518.07... -> 31,879,518
    # globex = 42,000,000 * 20000 / 83000 = 10,120,481.92... -> 10,120,481, +1 leftover
    #          (the larger remainder, .92 > .07) = 10,120,482
    result = attribute(
        _samples(700, 60),
        [_attempt("acme", 500, 4000, 3000), _attempt("globex", 100, 1000)],
    )
    (node,) = result.nodes
    assert (node.measured_mj, node.attributed_mj, node.idle_mj) == (42_000_000, 42_000_000, 0)
    shares = {s.key[0]: s.energy_mj for s in result.shares}
    assert shares == {"acme": 31_879_518, "globex": 10_120_482}


def test_an_idle_minute_is_all_idle() -> None:
    result = attribute(_samples(700, 60), [])
    (node,) = result.nodes
    assert (node.measured_mj, node.attributed_mj, node.idle_mj) == (42_000_000, 0, 42_000_000)
    assert result.shares == []


def test_missing_counter_integrates_power() -> None:
    (node,) = attribute(_samples(700, 60, counter=False), []).nodes
    assert node.measured_mj == 42_000_000


def test_counter_reset_falls_back_to_power_for_that_interval() -> None:
    samples = _samples(700, 60)
    # The driver reloads at 30 s: the counter restarts near zero.
    samples = [
        s
        if s.ts < T0 + timedelta(seconds=30)
        else Sample(s.node_id, s.gpu, s.ts, s.power_w, s.energy_mj - 21_000_000 + 5)
        for s in samples
    ]
    (node,) = attribute(samples, []).nodes
    assert node.measured_mj == 42_000_000


def test_a_gap_is_unmeasured_and_marked() -> None:
    samples = [s for s in _samples(700, 60) if not (10 < (s.ts - T0).seconds < 55)]
    (node,) = attribute(samples, [], max_gap=timedelta(seconds=30)).nodes
    assert node.has_gap and node.unmeasured_ms == 45_000
    assert node.measured_mj == 700 * 15 * 1000


def test_a_token_in_a_large_batch_weighs_a_quarter_of_an_unbatched_one() -> None:
    alone = Attempt(("a",), "n1", T0, 1000, 100, 0, batch_size=1)
    batched = Attempt(("b",), "n1", T0, 1000, 100, 0, batch_size=32)
    assert Weights().of(alone) == 4 * Weights().of(batched)
    assert [batch_bucket(b) for b in (None, 1, 2, 4, 5, 16, 64, 65)] == [
        "unknown",
        "1",
        "2-4",
        "2-4",
        "5-16",
        "5-16",
        "17-64",
        "65+",
    ]


def test_energy_across_a_window_boundary_is_split_by_time() -> None:
    parts = split_by_window(T0 + timedelta(seconds=50), T0 + timedelta(seconds=70), 1000)
    assert parts == [(T0, 500), (T0 + timedelta(minutes=1), 500)]


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
def test_largest_remainder_conserves_exactly(total: int, weights: list[int]) -> None:
    if sum(weights) == 0:
        return
    shares = largest_remainder(total, weights)
    assert sum(shares) == total
    assert all(s >= 0 for s in shares)
    assert all(
        abs(s * sum(weights) - total * w) < sum(weights)
        for s, w in zip(shares, weights, strict=True)
    )


_sample = st.builds(
    lambda node, gpu, ms, watts, counter: (node, gpu, ms, watts, counter),
    st.sampled_from(["n1", "n2"]),
    st.sampled_from(["0", "1"]),
    st.integers(0, 300_000),
    st.integers(0, 1500),
    st.one_of(st.none(), st.integers(0, 10**9)),
)
_attempt_st = st.builds(
    lambda node, ms, tenant, inp, out, cached: Attempt(
        (tenant,), node, T0 + timedelta(milliseconds=ms), inp, out, min(cached, inp)
    ),
    st.sampled_from(["n1", "n2", "n3"]),
    st.integers(0, 300_000),
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 10_000),
    st.integers(0, 2_000),
    st.integers(0, 10_000),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_sample, max_size=40), st.lists(_attempt_st, max_size=30), st.integers(1, 60))
def test_energy_is_conserved_for_any_interleaving(
    raw: list[tuple[str, str, int, int, int | None]], attempts: list[Attempt], gap_s: int
) -> None:
    samples = [
        Sample(n, g, T0 + timedelta(milliseconds=ms), Decimal(w), c) for n, g, ms, w, c in raw
    ]
    result = attribute(samples, attempts, Weights(), max_gap=timedelta(seconds=gap_s))
    for node in result.nodes:
        assert node.attributed_mj + node.idle_mj == node.measured_mj
        assert node.measured_mj >= 0
        shared = sum(
            s.energy_mj
            for s in result.shares
            if (s.window_start, s.node_id) == (node.window_start, node.node_id)
        )
        assert shared == node.attributed_mj
    # Arrival order of the inputs does not matter.
    again = attribute(
        list(reversed(samples)), list(reversed(attempts)), max_gap=timedelta(seconds=gap_s)
    )
    assert again.nodes == result.nodes
    assert sum(s.energy_mj for s in again.shares) == sum(s.energy_mj for s in result.shares)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(1, 200)),
            st.integers(0, 5000),
            st.integers(0, 2000),
            st.integers(0, 5000),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_streams_weights_equal_the_pure_weights(
    rows: list[tuple[int | None, int, int, int]],
) -> None:
    """Batch buckets and weights are computed column-wise in the stream
    (polars) and per attempt in the pure attribution: they must agree."""
    evs = []
    for i, (batch, inp, out, cached) in enumerate(rows):
        ev = event(
            event_id=f"e{i}",
            provider="self-hosted",
            model="qwen3-32b",
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=min(cached, inp),
        )
        if batch is not None:
            ev["batch_size"] = batch
        evs.append(ev)
    frame = decode(messages(evs, per_message=5)).events
    stream = usage_weights(frame)
    pure: dict[str, int] = {}
    for ev in evs:
        attempt = Attempt(
            ("k",),
            "gw-1",
            T0,
            ev["input_tokens"],
            ev["output_tokens"],
            ev["cache_read_tokens"],
            ev.get("batch_size"),
        )
        bucket = batch_bucket(ev.get("batch_size"))
        pure[bucket] = pure.get(bucket, 0) + Weights().of(attempt)
    got: dict[str, int] = {}
    for bucket, weight in stream.select("batch_bucket", "weight").iter_rows():
        got[bucket] = got.get(bucket, 0) + weight
    assert got == pure
