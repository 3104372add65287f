"""The simulator's telemetry and cache events, run through the pure
attribution: tokens per joule differ by model tier, batch bucket and cache
state in the direction of the physics, and the cache-thrash incident shows
the hit-rate fall and names the evicting tenant."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from models.contracts import CacheEvent
from pipeline.cache.codec import CACHE
from pipeline.cache.windows import cache_windows, top_evictors, window_frames
from pipeline.energy.attribution import Attempt, Sample, attribute, batch_bucket
from pipeline.testbed.simulate.side import cache_events, counters, telemetry
from pipeline.testbed.simulate.usage import THRASHER, SimConfig, generate
from tests.factories import messages

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
CFG = SimConfig(start=START, duration_s=3600, rate=8, seed=11, incident="cache-thrash")
EVENTS = list(generate(CFG))


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _tokens_per_joule(dimension: str) -> dict[str, Fraction]:
    samples = [
        Sample(s["node_id"], s["gpu"], _t(s["ts"]), Decimal(str(s["power_w"])), s["energy_mj"])
        for s in telemetry(EVENTS, CFG)
    ]
    hosted = [e for e in EVENTS if e["provider"] == "self-hosted"]
    attempts = [
        Attempt(
            (
                e["model"],
                batch_bucket(e.get("batch_size")),
                "hit" if e["cache_read_tokens"] else "miss",
            ),
            e["node_id"],
            _t(e["ts"]),
            e["input_tokens"],
            e["output_tokens"],
            e["cache_read_tokens"],
            e.get("batch_size"),
        )
        for e in hosted
    ]
    result = attribute(samples, attempts)
    index = {"model": 0, "batch": 1, "cache": 2}[dimension]
    tokens: dict[str, int] = defaultdict(int)
    energy: dict[str, int] = defaultdict(int)
    for s in result.shares:
        tokens[s.key[index]] += s.input_tokens + s.output_tokens
        energy[s.key[index]] += s.energy_mj
    return {k: Fraction(tokens[k] * 1000, energy[k]) for k in tokens}


def test_telemetry_covers_the_simulated_span_and_stops_at_its_end() -> None:
    """The last sample is at the span's end: it covers the last minute, and
    a run of the next span repeats only that instant (its first sample, once
    per GPU), never a later one."""
    stamps = sorted({_t(s["ts"]) for s in telemetry(EVENTS, CFG)})
    end = START + timedelta(seconds=CFG.duration_s)
    assert (stamps[0], stamps[-1]) == (START, end)
    assert len(stamps) == CFG.duration_s // 5 + 1
    following = SimConfig(start=end, duration_s=600, rate=8, seed=12)
    overlap = [s for s in telemetry(list(generate(following)), following) if _t(s["ts"]) <= end]
    # Only the next run's baseline sample repeats an instant this one stored.
    assert overlap and {_t(s["ts"]) for s in overlap} == {end}
    assert len(overlap) == len({(s["node_id"], s["gpu"]) for s in overlap})


def test_a_span_that_continues_another_leaves_out_only_the_instant_that_one_sampled() -> None:
    end = START + timedelta(seconds=CFG.duration_s)
    following = SimConfig(start=end, duration_s=600, rate=8, seed=12)
    events = list(generate(following))
    alone = list(telemetry(events, following))
    continued = list(telemetry(events, following, baseline=False))
    assert continued == [s for s in alone if _t(s["ts"]) > end] != []
    assert len(continued) < len(alone)


def test_the_larger_model_makes_fewer_tokens_per_joule() -> None:
    tpj = _tokens_per_joule("model")
    assert tpj["llama-3.3-70b"] < tpj["qwen3-32b"]


def test_larger_serving_batches_make_more_tokens_per_joule() -> None:
    tpj = _tokens_per_joule("batch")
    assert tpj["1"] < tpj["2-4"] < tpj["5-16"] < tpj["17-64"]
    assert tpj["17-64"] / tpj["1"] > 3


def test_cache_hits_make_more_tokens_per_joule() -> None:
    tpj = _tokens_per_joule("cache")
    assert tpj["hit"] > tpj["miss"]


def test_cache_thrash_drops_the_shared_hit_rate_and_names_the_evictor() -> None:
    windows, evicted = cache_windows(
        CacheEvent.model_validate(c) for c in cache_events(EVENTS, CFG)
    )
    begin, end = CFG.incident_window() or (START, START)

    def rate(lo: datetime, hi: datetime) -> float:
        sel = [w for w in windows if lo <= w.window_start < hi and w.layer == "prefix"]
        hits = sum(w.hits for w in sel)
        return hits / (hits + sum(w.misses for w in sel))

    before = rate(START, begin)
    during = rate(begin + timedelta(minutes=2), end)
    assert 0.6 < before < 0.8 and 0.1 < during < 0.3, (before, during)
    assert top_evictors(evicted)[0][0] == THRASHER


def test_answer_caches_save_whole_calls_and_every_event_names_its_model() -> None:
    events = list(cache_events(EVENTS, CFG))
    assert all(c["model"] and c["provider"] for c in events)
    answered = [c for c in events if c["layer"] in ("response", "semantic") and c["op"] == "hit"]
    firsts = [e for e in EVENTS if e["attempt"] == 1 and not e["batch"]]
    # About RESPONSE_HIT + SEMANTIC_HIT of first attempts have a look-alike served from cache.
    assert 0.05 < len(answered) / len(firsts) < 0.11
    assert {c["layer"] for c in answered} == {"response", "semantic"}
    assert all(c["output_tokens"] > 0 for c in answered)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([None, "cache-thrash"]))
def test_a_cache_nodes_counters_give_the_windows_of_the_events_they_count(
    seed: int, incident: str | None
) -> None:
    cfg = SimConfig(start=START, duration_s=1800, rate=3, seed=seed, incident=incident)
    lookups = list(cache_events(list(generate(cfg)), cfg))
    counted = list(counters(lookups))
    # (How many fewer lines depends on the rate: more operations per minute
    # share a counter.)
    assert len(counted) < len(lookups)
    assert sum(c["count"] for c in counted) == len(lookups)
    # Through the stream's own decoder, as the cache agent reads them.
    by_events = window_frames(CACHE.decode(messages(lookups, per_message=200)).events)
    by_counters = window_frames(CACHE.decode(messages(counted, per_message=200)).events)
    for events_frame, counters_frame in zip(by_events, by_counters, strict=True):
        assert_frame_equal(events_frame, counters_frame)
    assert by_events[0]["hits"].sum() + by_events[0]["misses"].sum() == sum(
        1 for c in lookups if c["op"] in ("hit", "miss")
    )
    # Counting counters again (a relay that re-aggregates) changes nothing.
    assert sorted(counters(counted), key=repr) == sorted(counted, key=repr)
