"""Cache windows and eviction blame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from models.contracts import CacheEvent
from models.prices import PriceBook, PriceEntry
from pipeline.cache.windows import cache_windows, saving, top_evictors, value_at

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


SONNET = PriceEntry(
    model="claude-4.5-sonnet",
    provider="anthropic",
    effective_from=T0 - timedelta(days=30),
    input_per_mtok=Decimal("3"),
    output_per_mtok=Decimal("15"),
    cache_read_per_mtok=Decimal("0.30"),
    cache_write_per_mtok=Decimal("3.75"),
)


def test_what_a_hit_saves_by_layer() -> None:
    # A prefix hit still pays the cache-read price: 3,000 x ($3 - $0.30) / 1M.
    assert saving("prefix", SONNET, 3000, 0) == Decimal("0.0081")
    # A response or semantic hit saves the whole call: 4,000 x $3 + 500 x $15, per 1M.
    assert saving("response", SONNET, 4000, 500) == Decimal("0.0195")
    assert saving("semantic", SONNET, 4000, 500) == Decimal("0.0195")
    # An embedding hit saves the embedding call; an answer length means nothing there.
    assert saving("embedding", SONNET, 1000, 500) == Decimal("0.003")


def test_hits_are_valued_with_the_price_in_force_then() -> None:
    cheaper = SONNET.model_copy(update={"effective_from": T0, "input_per_mtok": Decimal("1.30")})
    book = PriceBook((SONNET, cheaper))
    before = value_at(
        book, "prefix", SONNET.model, "anthropic", T0 - timedelta(minutes=1), 10**6, 0
    )
    after = value_at(book, "prefix", SONNET.model, "anthropic", T0, 10**6, 0)
    assert (before, after) == (Decimal("2.70"), Decimal("1.00"))
    # No price yet, or a cache that did not name its model: not valued, never guessed.
    assert (
        value_at(book, "prefix", SONNET.model, "anthropic", T0 - timedelta(days=31), 1, 0) is None
    )
    assert value_at(book, "prefix", "", "", T0, 1, 0) is None


@given(
    st.sampled_from(["prefix", "embedding", "response", "semantic"]),
    st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**6)), max_size=30),
)
def test_valuing_a_window_equals_valuing_its_events(
    layer: str, hits: list[tuple[int, int]]
) -> None:
    """Windows store summed tokens and are valued once; that must equal the
    sum of what each hit saved."""
    each = sum((saving(layer, SONNET, t, o) for t, o in hits), Decimal(0))
    summed = saving(layer, SONNET, sum(t for t, _ in hits), sum(o for _, o in hits))
    assert each == summed


def test_windows_keep_the_model_and_the_answer_length() -> None:
    hit = _ev("hit", "a", 400).model_copy(
        update={"model": "gpt-4o", "provider": "openai", "layer": "response", "output_tokens": 90}
    )
    windows, _ = cache_windows([hit, _ev("miss", "a", 400)])
    keyed = {(w.layer, w.model, w.provider): w for w in windows}
    assert keyed[("response", "gpt-4o", "openai")].hit_output_tokens == 90
    assert keyed[("prefix", "", "")].misses == 1  # no model named: kept, valued as unpriced
