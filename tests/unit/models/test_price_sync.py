"""A sync adds versions, effective from the sync, only where the prices in
force differ from the map's, and never touches what the book holds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from models.price_sync import sync
from models.prices import CSV_HEADER, PriceBook, PriceEntry, parse_csv

BOOK = PriceBook(
    tuple(
        parse_csv(
            f"{CSV_HEADER}\n"
            "a,p,,standard,0,2025-01-01T00:00:00Z,1,2,0.1,1.25,,,0\n"
            "a,p,,standard,200001,2025-01-01T00:00:00Z,2,4,0.2,2.5,,,0\n"
            "b,p,,standard,0,2025-01-01T00:00:00Z,3,15,0.3,3.75,6,,0\n"
            "gone,p,,standard,0,2025-01-01T00:00:00Z,1,1,1,1,,,0\n"
        )
    )
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _map(b_output: str, *, new_model: bool) -> list[PriceEntry]:
    rows = (
        "a,p,,standard,0,2024-01-01T00:00:00Z,1,2,0.1,1.25,,,0\n"
        "a,p,,standard,200001,2024-01-01T00:00:00Z,2,4,0.2,2.5,,,0\n"
        f"b,p,,standard,0,2024-01-01T00:00:00Z,3,{b_output},0.3,3.75,6,,0\n"
    )
    if new_model:
        rows += "c,p,,priority,0,2024-01-01T00:00:00Z,5,25,0.5,6.25,,,0\n"
    return parse_csv(f"{CSV_HEADER}\n{rows}")


def test_only_what_changed_gets_a_version_effective_now() -> None:
    plan = sync(BOOK, _map("18", new_model=True), NOW)
    assert plan.unchanged == 1  # a, both tiers equal
    assert [(c.key[0], c.rate, c.old, c.new) for c in plan.changes] == [
        ("b", "output_per_mtok", Decimal(15), Decimal(18))
    ]
    assert plan.new_keys == [("c", "p", "", "priority")]
    assert {(e.model, e.effective_from) for e in plan.added} == {("b", NOW), ("c", NOW)}
    assert plan.gone == [("gone", "p", "", "standard")]


def test_a_map_equal_to_the_book_adds_nothing() -> None:
    plan = sync(BOOK, _map("15", new_model=False), NOW)
    assert (plan.added, plan.changes, plan.unchanged) == ([], [], 2)


@given(st.decimals(min_value=0, max_value=100, places=2))
def test_syncing_twice_adds_nothing_the_second_time(output: Decimal) -> None:
    first = sync(BOOK, _map(str(output), new_model=True), NOW)
    after = PriceBook((*BOOK.entries, *first.added))
    again = sync(after, _map(str(output), new_model=True), datetime(2026, 2, 1, tzinfo=UTC))
    assert again.added == [] and again.changes == []
    # History is untouched: before the sync, b costs what it cost.
    assert after.price_at("b", "p", datetime(2025, 6, 1, tzinfo=UTC)) == BOOK.price_at(
        "b", "p", datetime(2025, 6, 1, tzinfo=UTC)
    )
