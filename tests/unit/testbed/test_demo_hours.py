"""The demo never publishes an hour twice, nor two settings into one hour,
nor again after a publication that was cut short."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.testbed.demo_hours import DemoRun, HeldHour, HourTaken, must_publish

PLAIN = DemoRun(Decimal("20"), None)
THRASH = DemoRun(Decimal("20"), "cache-thrash")
SLOW = DemoRun(Decimal("3"), None)


def done(run: DemoRun) -> HeldHour:
    return HeldHour(run, complete=True)


def test_an_hour_without_a_demo_is_published() -> None:
    assert must_publish(None, PLAIN) and must_publish(None, THRASH)


def test_the_same_demo_again_is_shown_without_publishing() -> None:
    assert not must_publish(done(PLAIN), PLAIN)
    assert not must_publish(done(THRASH), DemoRun(Decimal("20.0"), "cache-thrash"))


@pytest.mark.parametrize(("held", "want"), [(PLAIN, THRASH), (THRASH, PLAIN), (PLAIN, SLOW)])
def test_other_settings_are_refused_and_told_why(held: DemoRun, want: DemoRun) -> None:
    with pytest.raises(HourTaken) as refused:
        must_publish(done(held), want)
    assert held.describe() in str(refused.value) and want.describe() in str(refused.value)


def test_a_publication_cut_short_is_refused_even_with_the_same_settings() -> None:
    with pytest.raises(HourTaken, match="did not finish"):
        must_publish(HeldHour(PLAIN, complete=False), PLAIN)


_held = st.one_of(
    st.none(), st.builds(HeldHour, st.sampled_from([PLAIN, THRASH, SLOW]), st.booleans())
)


@given(_held, st.sampled_from([PLAIN, THRASH, SLOW]))
def test_an_hour_ends_up_holding_one_whole_setting(held: HeldHour | None, want: DemoRun) -> None:
    try:
        publish = must_publish(held, want)
    except HourTaken:
        assert held is not None and (not held.complete or held.run != want)
        return
    assert held is None or (held.complete and held.run == want)
    assert publish == (held is None)
