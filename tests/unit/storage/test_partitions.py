"""Partition names, bounds and horizons: every admissible event's day is
kept, and retention drops only whole partitions past the horizon."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pipeline.storage import partitions as p
from pipeline.stream.admission import Admission

# hypothesis takes naive bounds and attaches the zone itself.
_times = st.datetimes(
    min_value=datetime(2024, 1, 1),  # noqa: DTZ001
    max_value=datetime(2030, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


def test_names_round_trip_and_others_are_not_partitions() -> None:
    assert p.name(p.SEEN_EVENT, date(2026, 12, 7)) == "seen_event_p20261207"
    assert p.name(p.SPEND_WINDOW, date(2026, 12, 1)) == "spend_window_p202612"
    assert p.starts_of("seen_event_p20261207", p.SEEN_EVENT) == date(2026, 12, 7)
    assert p.starts_of("spend_window_p202612", p.SPEND_WINDOW) == date(2026, 12, 1)
    assert p.starts_of("spend_window_p202612", p.SEEN_EVENT) is None
    assert p.starts_of("seen_event_p202612", p.SEEN_EVENT) is None  # a day has 8 digits
    assert not p.is_partition("spend_window_hour")
    assert not p.is_partition("spend_window_p202612_pkey")


def test_create_sql_bounds_are_the_grain() -> None:
    assert p.create_sql(p.SEEN_EVENT, date(2026, 12, 31)) == (
        "CREATE TABLE IF NOT EXISTS seen_event_p20261231 PARTITION OF seen_event"
        " FOR VALUES FROM ('2026-12-31') TO ('2027-01-01')"
    )
    assert p.create_sql(p.SPEND_WINDOW, date(2026, 12, 1)).endswith(
        "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
    )


@given(_times, st.floats(1, 400), st.floats(0, 86_400 * 3), _times)
def test_every_admissible_event_day_is_within_the_dedup_horizon(
    now: datetime, age_days: float, future_s: float, ts: datetime
) -> None:
    admission = Admission(now=now, max_age=timedelta(days=age_days),
                          max_future=timedelta(seconds=future_s))  # fmt: skip
    horizon = p.dedup_horizon(now, timedelta(days=age_days), timedelta(seconds=future_s))
    if admission.earliest <= ts <= admission.latest:  # what the worker admits
        assert ts.date() >= horizon
        # ...so its partition is not among those retention drops.
        assert p.past(p.SEEN_EVENT, [p.name(p.SEEN_EVENT, ts.date())], horizon) == []


@given(_times, st.integers(1, 36))
def test_minute_retention_keeps_the_current_month_and_n_before(now: datetime, n: int) -> None:
    first = p.minute_horizon(now, n)
    assert first.day == 1
    months_back = (now.year - first.year) * 12 + now.month - first.month
    assert months_back == n
    names = [p.name(p.SPEND_WINDOW, m) for m in (first, now.date().replace(day=1))]
    assert p.past(p.SPEND_WINDOW, names, first) == []
    before = (first - timedelta(days=1)).replace(day=1)
    assert p.past(p.SPEND_WINDOW, [p.name(p.SPEND_WINDOW, before)], first) == [
        p.name(p.SPEND_WINDOW, before)
    ]


def test_made_asks_once_for_each_partition_of_every_table() -> None:
    made = p.Made()
    todo = made.todo([date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 1)])
    tables = {key[0] for key, _ in todo}
    assert tables == {t.table for t in p.ALL}
    assert sum(key[0] == "seen_event" for key, _ in todo) == 2  # two days
    assert sum(key[0] == "energy_window" for key, _ in todo) == 2  # two months
    made.made(key for key, _ in todo)
    assert made.todo([date(2026, 12, 1)]) == []
    again = made.todo([date(2026, 12, 2)])
    assert [key for key, _ in again] == [("seen_event", date(2026, 12, 2))]
