from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.contracts import SERVICE_TIERS
from models.money import TokenCounts, exact
from models.prices import CSV_HEADER, PriceBook, parse_csv
from models.spend_tables import KIND_COSTS
from pipeline.spend.batch import prepare
from pipeline.spend.pricing import book_frame
from pipeline.spend.windows import TOKENS, combine
from tests.factories import ADMISSION, event, messages

BOOK = PriceBook(
    tuple(
        parse_csv(
            "model,provider,effective_from,input_per_mtok,output_per_mtok,cache_read_per_mtok,"
            "cache_write_per_mtok,batch_discount\n"
            "m1,p,2025-01-01T00:00:00Z,3,15,0.30,3.75,0.5\n"
            "m1,p,2025-11-01T10:01:30Z,2.5,12.5,0.25,3.125,0.5\n"
            "m2,p,2025-01-01T00:00:00Z,0.14,0.28,0.014,0.14,0\n"
        )
    )
)
FRAME = book_frame(BOOK)
# A v2 book beside it: m1 gains a priority tier, a batch tier of its own in
# one region, and a long-context tier above 1,000 prompt tokens (with 1h
# write and reasoning rates); m2 keeps its v1 entry.
V2 = PriceBook(
    (
        *BOOK.entries,
        *parse_csv(
            f"{CSV_HEADER}\n"
            "m1,p,,standard,1001,2025-01-01T00:00:00Z,6,22.5,0.6,7.5,12,30,0.5\n"
            "m1,p,,priority,0,2025-01-01T00:00:00Z,5,25,0.5,6.25,10,,0\n"
            "m1,p,,priority,1001,2025-11-01T10:02:00Z,10,40,1,12.5,20,,0\n"
            "m1,p,eu,batch,0,2025-01-01T00:00:00Z,1.2,6,0.12,1.5,,,0.25\n"
            "m1,p,eu,standard,0,2025-11-01T10:03:00Z,3.3,16.5,0.33,4.125,6.6,,0.5\n"
        ),
    )
)
V2_FRAME = book_frame(V2)


def test_worked_example_as_windows_is_195_and_114_dollars() -> None:
    def day(cache_read: int) -> Decimal:
        evs = [
            event(
                event_id=f"e{i}",
                model="claude-4.5-sonnet",
                provider="anthropic",
                cache_read_tokens=cache_read,
                ts=f"2025-11-01T{i % 24:02d}:{i % 60:02d}:00Z",
            )
            for i in range(10_000)
        ]
        from pipeline.spend.price_store import default_prices

        book = PriceBook(tuple(default_prices()))
        windows = prepare(messages(evs, per_message=100), book, book_frame(book), ADMISSION).windows
        return sum((w.cost_usd for w in windows), Decimal(0))

    assert day(0) == Decimal("195")
    assert day(3000) == Decimal("114")


def test_a_price_change_inside_a_minute_prices_each_event_by_its_own_ts() -> None:
    before = event(event_id="a", model="m1", provider="p", ts="2025-11-01T10:01:29Z")
    after = event(event_id="b", model="m1", provider="p", ts="2025-11-01T10:01:30Z")
    (w,) = prepare(messages([before, after]), BOOK, FRAME, ADMISSION).windows
    assert w.window_start == datetime(2025, 11, 1, 10, 1, tzinfo=UTC)
    assert w.cost_usd == Decimal("0.0195") + Decimal("0.01625")


_event = st.builds(
    lambda i, model, inp, out, attempt, status, tier, sec, unknown, region, shares: event(
        event_id=f"e{i}",
        model="nope" if unknown else model,
        provider="p",
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=inp // 2,
        cache_write_tokens=inp // 5,
        attempt=attempt,
        status=status,
        ts=f"2025-11-01T10:{sec // 60:02d}:{sec % 60:02d}Z",
        tenant=f"t{i % 3}",
        **tier,
        **({"region": region} if region else {}),
        **{
            k: v
            for k, v in {
                "cache_write_1h_tokens": inp // 5 * shares[0] // 4,
                "reasoning_tokens": out * shares[1] // 4,
            }.items()
            if v
        },
    ),
    st.integers(0, 10**6),
    st.sampled_from(["m1", "m2"]),
    st.integers(0, 10**4),
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.sampled_from(["ok", "error", "timeout"]),
    st.sampled_from(
        [
            {"batch": False},
            {"batch": True},
            *({"batch": t == "batch", "service_tier": t} for t in SERVICE_TIERS),
        ]
    ),
    st.integers(0, 299),
    st.booleans(),
    st.sampled_from([None, "eu", "us"]),
    st.tuples(st.integers(0, 4), st.integers(0, 4)),
)


def _costs(book: PriceBook, e: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """The cost and the list cost of one event, from the book in Python."""
    ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
    tier = e.get("service_tier") or ("batch" if e["batch"] else "standard")
    rate = book.rate(
        e["model"], "p", ts, region=e.get("region"), tier=tier, input_tokens=e["input_tokens"]
    )
    if rate is None:
        return Decimal(0), Decimal(0)
    tokens = TokenCounts(*(e.get(t, 0) for t in TOKENS))
    return (
        book.entries[rate.price_id].costs(tokens, discounted=rate.discounted).total,
        book.entries[rate.list_price_id].costs(tokens, discounted=False).total,
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_event, max_size=60, unique_by=lambda e: e["event_id"]),
    st.integers(1, 7),
    st.booleans(),
)
def test_window_sums_conserve_costs_tokens_and_attempts(
    evs: list[dict[str, Any]], per_message: int, v2: bool
) -> None:
    """The column-wise pricing (as-of joins, fallbacks, prompt tiers) gives
    every window the cost and list cost the book's own lookup gives its
    events, one by one."""
    book, frame = (V2, V2_FRAME) if v2 else (BOOK, FRAME)
    windows = prepare(messages(evs, per_message=per_message), book, frame, ADMISSION).windows
    cost = [_costs(book, e) for e in evs]
    with exact():
        assert sum((w.cost_usd for w in windows), Decimal(0)) == sum(c for c, _ in cost)
        assert sum((w.list_cost_usd for w in windows), Decimal(0)) == sum(x for _, x in cost)
        assert sum((w.retry_cost_usd for w in windows), Decimal(0)) == sum(
            (c for e, (c, _) in zip(evs, cost, strict=True) if e["attempt"] > 1), Decimal(0)
        )
        assert sum((w.failed_cost_usd for w in windows), Decimal(0)) == sum(
            (c for e, (c, _) in zip(evs, cost, strict=True) if e["status"] != "ok"), Decimal(0)
        )
        # Window by window, not only in total: (minute, tenant, model).
        per_window: dict[tuple[object, ...], list[Decimal]] = defaultdict(
            lambda: [Decimal(0), Decimal(0)]
        )
        for e, (c, x) in zip(evs, cost, strict=True):
            key = (e["ts"][:16], e["tenant"], e["model"])
            per_window[key][0] += c
            per_window[key][1] += x
        stored = {
            (f"{w.window_start:%Y-%m-%dT%H:%M}", w.tenant, w.model): [w.cost_usd, w.list_cost_usd]
            for w in windows
        }
        assert {k: v for k, v in stored.items() if any(v)} == {
            k: v for k, v in per_window.items() if any(v)
        }
        for w in windows:
            assert sum((getattr(w, k) for k in KIND_COSTS), Decimal(0)) == w.cost_usd
    for t in TOKENS:
        assert sum(getattr(w, t) for w in windows) == sum(e.get(t, 0) for e in evs)
    assert sum(w.attempts for w in windows) == len(evs)
    assert sum(w.unpriced_attempts for w in windows) == sum(e["model"] == "nope" for e in evs)
    assert len({w.key() for w in windows}) == len(windows)


@given(st.lists(_event, min_size=1, max_size=30, unique_by=lambda e: e["event_id"]))
@settings(max_examples=50, deadline=None)
def test_adding_a_windows_negation_cancels_it(evs: list[dict[str, Any]]) -> None:
    windows = prepare(messages(evs), BOOK, FRAME, ADMISSION).windows
    assert combine(windows, [w.negated() for w in windows]) == []
