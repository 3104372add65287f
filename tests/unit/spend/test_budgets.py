"""Token-budget breaches counted in the spend stage (pipeline/spend/budgets.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from pipeline.spend.budgets import NO_CAPS, budget_parts, caps_frame
from tests.unit.alerts.test_rules import CATALOG

T0 = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
CAPS = pl.DataFrame(
    {"route": ["/a", "/b"], "input_cap": [1000, 50], "output_cap": [100, 10]},
    schema={"route": pl.String(), "input_cap": pl.Int64(), "output_cap": pl.Int64()},
)


def _events(rows: list[tuple[int, str, str, int, int]]) -> pl.DataFrame:
    """(second, tenant, route, input tokens, output tokens)"""
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s, *_ in rows],
            "tenant": [t for _, t, *_ in rows],
            "route": [r for _, _, r, _, _ in rows],
            "model": ["m"] * len(rows),
            "input_tokens": [i for *_, i, _ in rows],
            "output_tokens": [o for *_, o in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def test_attempts_over_a_cap_are_counted_per_window_with_the_tokens_beyond() -> None:
    events = _events(
        [
            (1, "acme", "/a", 1000, 100),  # exactly at the caps: not over
            (2, "acme", "/a", 1001, 100),  # 1 over the input cap
            (3, "acme", "/a", 5000, 250),  # both: 4000 + 150 beyond
            (70, "acme", "/a", 1500, 0),  # the next minute
            (4, "globex", "/b", 10, 11),  # another tenant, output only
            (5, "acme", "/undeclared", 10**6, 10**6),  # no budget declared
        ]
    )
    got = budget_parts(events, CAPS).sort("window_start", "tenant").rows()
    assert got == [
        (T0, "acme", "/a", "m", 2, 1, 4151),
        (T0, "globex", "/b", "m", 0, 1, 1),
        (T0 + timedelta(minutes=1), "acme", "/a", "m", 1, 0, 500),
    ]


def test_no_catalog_means_no_breaches() -> None:
    events = _events([(1, "acme", "/a", 10**6, 10**6)])
    assert budget_parts(events, NO_CAPS).is_empty()
    assert budget_parts(events.clear(), CAPS).is_empty()


def test_caps_come_from_the_catalog() -> None:
    caps = caps_frame(CATALOG.routes)
    declared = {r.route: r.token_budget for r in CATALOG.routes}
    assert caps.height == len(declared)
    for route, input_cap, output_cap in caps.rows():
        assert (input_cap, output_cap) == (declared[route].input_cap, declared[route].output_cap)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 300),
            st.sampled_from(["acme", "globex"]),
            st.sampled_from(["/a", "/b", "/c"]),
            st.integers(0, 3000),
            st.integers(0, 300),
        ),
        max_size=60,
    )
)
def test_breach_counts_match_a_plain_count(rows: list[tuple[int, str, str, int, int]]) -> None:
    caps = {r: (i, o) for r, i, o in CAPS.rows()}
    got = budget_parts(_events(rows), CAPS)
    declared = [(r, i, o) for _, _, r, i, o in rows if r in caps]
    assert got["over_input"].sum() == sum(i > caps[r][0] for r, i, _ in declared)
    assert got["over_output"].sum() == sum(o > caps[r][1] for r, _, o in declared)
    assert got["over_tokens"].sum() == sum(
        max(i - caps[r][0], 0) + max(o - caps[r][1], 0) for r, i, o in declared
    )
