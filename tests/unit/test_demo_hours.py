"""The demo never publishes an hour twice, nor two settings into one hour."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.demo_hours import DemoRun, HourTaken, must_publish

PLAIN = DemoRun(Decimal("20"), None)
THRASH = DemoRun(Decimal("20"), "cache-thrash")
SLOW = DemoRun(Decimal("3"), None)


def test_an_hour_without_a_demo_is_published() -> None:
    assert must_publish(None, PLAIN) and must_publish(None, THRASH)


def test_the_same_demo_again_is_shown_without_publishing() -> None:
    assert not must_publish(PLAIN, PLAIN)
    assert not must_publish(THRASH, DemoRun(Decimal("20"), "cache-thrash"))


@pytest.mark.parametrize(("held", "want"), [(PLAIN, THRASH), (THRASH, PLAIN), (PLAIN, SLOW)])
def test_other_settings_are_refused_and_told_why(held: DemoRun, want: DemoRun) -> None:
    with pytest.raises(HourTaken) as refused:
        must_publish(held, want)
    assert held.describe() in str(refused.value) and want.describe() in str(refused.value)


@given(st.sampled_from([None, PLAIN, THRASH, SLOW]), st.sampled_from([PLAIN, THRASH, SLOW]))
def test_an_hour_ends_up_holding_exactly_one_setting(held: DemoRun | None, want: DemoRun) -> None:
    try:
        publish = must_publish(held, want)
    except HourTaken:
        assert held not in (None, want)
        return
    assert held in (None, want)
    assert publish == (held is None)
