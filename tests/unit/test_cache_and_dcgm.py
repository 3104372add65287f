"""Cache windows, eviction blame, and the dcgm-exporter parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from models.contracts import CacheEvent
from pipeline.cache_windows import cache_windows, top_evictors
from pipeline.dcgm import parse_scrape

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _ev(
    op: str, tenant: str, tokens: int = 100, owner: str | None = None, s: int = 0
) -> CacheEvent:
    return CacheEvent(
        node_id="n1",
        ts=T0 + timedelta(seconds=s),
        tenant=tenant,
        route="/chat",
        layer="prefix",
        op=op,
        tokens=tokens,
        owner_tenant=owner,  # type: ignore[arg-type]
    )


def test_hit_rates_by_requests_and_by_tokens() -> None:
    windows, _ = cache_windows(
        [_ev("hit", "a", 300), _ev("hit", "a", 100), _ev("miss", "a", 400), _ev("insert", "a")]
    )
    (w,) = windows
    assert (w.hits, w.misses, w.inserts) == (2, 1, 1)
    assert w.hit_rate == Fraction(2, 3) and w.token_hit_rate == Fraction(1, 2)


def test_the_thrashing_tenant_is_the_top_evictor_of_others() -> None:
    events = [_ev("evict", "launch", 1000, owner=victim) for victim in ("a", "b", "c", "a")]
    events += [_ev("evict", "a", 50, owner="b"), _ev("evict", "launch", 9999, owner="launch")]
    _, evicted = cache_windows(events)
    ranking = top_evictors(evicted)
    assert ranking[0] == ("launch", 4000)  # its own entries do not count against others
    assert dict(ranking)["a"] == 50


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["hit", "miss", "insert"]),
            st.sampled_from("ab"),
            st.integers(0, 10**6),
            st.integers(0, 600),
        )
    )
)
def test_hits_plus_misses_equal_the_events(events: list[tuple[str, str, int, int]]) -> None:
    windows, _ = cache_windows([_ev(op, t, n, s=s) for op, t, n, s in events])
    lookups = [e for e in events if e[0] != "insert"]
    assert sum(w.hits + w.misses for w in windows) == len(lookups)
    assert sum(w.hit_tokens + w.miss_tokens for w in windows) == sum(e[2] for e in lookups)


SCRAPE = (Path(__file__).parent.parent / "data" / "dcgm_scrape.prom").read_text()


def test_dcgm_exporter_text_becomes_samples() -> None:
    samples = parse_scrape(SCRAPE, T0)
    assert [(s.node_id, s.gpu, s.power_w, s.energy_mj) for s in samples] == [
        ("gpu-a1", "0", 612.5, 123456789012),
        ("gpu-a1", "1", 88.25, None),  # no counter: energy will come from power
    ]
    assert samples[0].model == "NVIDIA H100 80GB HBM3" and samples[0].ts == T0
