"""Reading spend by grain: the pieces of a range cover it exactly, each on
its grain's boundaries, so roll-ups and minutes sum to the same amounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from reports.spend_grain import STEP, coarsest_for, pieces, spend_rows

_minutes = st.integers(0, 60 * 24 * 400).map(
    lambda m: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=m)
)


@given(_minutes, _minutes, st.sampled_from(["minute", "hour", "day"]))
def test_pieces_cover_the_range_exactly_on_their_grains(
    a: datetime, b: datetime, coarsest: str
) -> None:
    since, until = min(a, b), max(a, b)
    got = pieces(since, until, coarsest)  # type: ignore[arg-type]
    if since == until:
        assert got == []
        return
    assert got[0].start == since and got[-1].end == until
    for left, right in pairwise(got):
        assert left.end == right.start
    order = ["minute", "hour", "day"]
    for p in got:
        assert p.start < p.end
        assert order.index(p.grain) <= order.index(coarsest)
        step = STEP[p.grain]
        midnight = p.start.replace(hour=0, minute=0)
        assert (p.start - midnight) % step == timedelta(0)
        assert (p.end - p.end.replace(hour=0, minute=0)) % step == timedelta(0)
    # Coarse where it can be: at most one day piece, hours only beside it.
    assert sum(p.grain == "day" for p in got) <= 1
    assert sum(p.grain == "minute" for p in got) <= 2


def test_a_month_is_read_from_days_only_and_a_ragged_range_from_all_three() -> None:
    month = pieces(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert [p.grain for p in month] == ["day"]
    ragged = pieces(
        datetime(2026, 11, 1, 22, 30, tzinfo=UTC), datetime(2026, 11, 4, 1, 15, tzinfo=UTC)
    )
    assert [p.grain for p in ragged] == ["minute", "hour", "day", "hour", "minute"]
    starts = [(p.start.day, p.start.hour, p.start.minute) for p in ragged]
    assert starts == [(1, 22, 30), (1, 23, 0), (2, 0, 0), (4, 0, 0), (4, 1, 0)]


def test_chart_buckets_choose_the_coarsest_grain_they_divide() -> None:
    assert coarsest_for(5) == "minute"
    assert coarsest_for(120) == "hour"
    assert coarsest_for(1440) == "day"


def test_spend_rows_names_its_own_parameters() -> None:
    sql, params = spend_rows(
        datetime(2026, 11, 1, 22, 30, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    )
    assert sql.count("UNION ALL") == 2
    assert "spend_window_day" in sql and "spend_window_hour" in sql
    assert set(params) == {"g0s", "g0e", "g1s", "g1e", "g2s", "g2e"}
    empty, none = spend_rows(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
    assert "WHERE false" in empty and none == {}
