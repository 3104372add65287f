"""settle, the pure decision of what a batch applies once the sink knows what
it holds: what was applied before (the floor), which keys were seen with the
same payload (duplicates) or another (conflicts)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.prices import PriceBook
from pipeline.spend.batch import CONFLICT, prepare, settle, unseen
from pipeline.spend.latency import latency_parts
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.spend.windows import SpendWindow, aggregate, combine
from pipeline.stream.message import Message, split_lines
from tests.factories import ADMISSION, event, line

BOOK = PriceBook(tuple(default_prices()))
FRAME = book_frame(BOOK)

_events = st.lists(
    st.builds(
        lambda i, tokens, minute, status: event(
            event_id=f"e{i}",
            input_tokens=tokens,
            output_tokens=tokens // 3,
            latency_ms=tokens % 997,
            ts=f"2025-11-01T10:{minute:02d}:30Z",
            status=status,
        ),
        st.integers(0, 12),  # few ids: repeats and conflicts within the batch
        st.integers(0, 10**5),
        st.integers(0, 2),
        st.sampled_from(["ok", "error"]),
    ),
    min_size=1,
    max_size=30,
)


def _keyed(windows: list[SpendWindow]) -> dict[tuple[object, ...], SpendWindow]:
    return {w.key(): w for w in combine(windows)}


def _batch(evs: list[dict[str, Any]], per_message: int, bad: int) -> list[Message]:
    lines = [line(e) for e in evs] + [b"not json"] * bad
    return [
        Message(k % 2, k // 2, b"\n".join(lines[i : i + per_message]))
        for k, i in enumerate(range(0, len(lines), per_message))
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events, st.integers(1, 4), st.integers(0, 3), st.data())
def test_settle_accounts_for_every_line_at_or_above_the_floor(
    evs: list[dict[str, Any]], per_message: int, bad: int, data: st.DataObject
) -> None:
    msgs = _batch(evs, per_message, bad)
    batch = prepare(msgs, BOOK, FRAME, ADMISSION)
    floor = {p: data.draw(st.integers(0, last + 1)) for p, last in batch.last_offsets.items()}
    candidates = unseen(batch, floor)
    idx = candidates["idx"].to_list()
    seen = data.draw(st.lists(st.sampled_from(idx), unique=True)) if idx else []
    cut = data.draw(st.integers(0, len(seen)))
    same, other = seen[:cut], seen[cut:]

    s = settle(batch, BOOK, floor, same, other)

    fresh_lines = sum(len(split_lines(m.value)) for m in msgs if m.offset >= floor[m.partition])
    # Every line of a message above the floor ends in exactly one place.
    assert sum(s.accepted.values()) + sum(s.duplicates.values()) + len(s.dead) == fresh_lines
    # What counts: the unseen events, minus the keys the sink held already.
    kept = set(candidates.filter(~candidates["idx"].is_in(seen))["event_key"].to_list())
    assert set(s.events["event_key"].to_list()) == kept
    assert sum(s.duplicates.values()) >= len(same)
    assert sum(1 for d in s.dead if d.reason.startswith(CONFLICT)) == s.conflicts >= len(other)
    # The sums are those of exactly the events that count (the cost rule is
    # linear, so subtracting the dropped ones is exact).
    assert _keyed(s.windows) == _keyed(aggregate(s.events, BOOK))
    assert s.latency.sort(s.latency.columns).equals(latency_parts(s.events).sort(s.latency.columns))
    assert s.unpriced.height == 0  # every model here has a price
    newest: dict[int, Any] = {}
    for p, ts in s.events.select("partition", "ts").iter_rows():
        newest[p] = max(ts, newest.get(p, ts))
    assert s.newest == newest


def test_a_batch_the_sink_holds_nothing_of_is_applied_as_prepared() -> None:
    batch = prepare(
        _batch([event(event_id=f"e{i}") for i in range(5)], 2, 1), BOOK, FRAME, ADMISSION
    )
    s = settle(batch, BOOK, {p: 0 for p in batch.last_offsets}, [], [])
    assert s.windows is batch.windows and s.latency is batch.latency  # nothing recomputed
    assert s.dead == batch.dead and s.conflicts == 0


def test_a_key_seen_with_another_payload_and_its_repeats_are_conflicts() -> None:
    evs = [event(event_id="x"), event(event_id="x"), event(event_id="y")]
    batch = prepare([Message(0, 0, b"\n".join(line(e) for e in evs))], BOOK, FRAME, ADMISSION)
    assert batch.duplicates[0] == 1  # the in-batch repeat of x
    x = unseen(batch, {0: 0}).filter(batch.events["event_id"] == "x")["idx"].to_list()
    s = settle(batch, BOOK, {0: 0}, [], x)
    assert s.events["event_id"].to_list() == ["y"]
    assert s.conflicts == 2 and sum(s.duplicates.values()) == 0
    assert {d.line for d in s.dead} == {0, 1}
