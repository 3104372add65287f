"""The month-end forecast, backtested on simulated months: at mid-month the
error stays under 10% and the 80% interval covers the actual month-end
total in most months."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from statistics import fmean

import pytest

from models.months import days_in
from pipeline.finance.forecast import forecast
from pipeline.testbed.simulate.months import daily_spend

MONTHS = [date(2025, m, 1) for m in range(1, 13)] + [date(2026, m, 1) for m in range(1, 13)]


def _backtest(month: date, seed: int, known_days: int) -> tuple[Decimal, Decimal, bool]:
    history_days = 28
    days = daily_spend(seed, month - timedelta(days=history_days), history_days + days_in(month))
    history, actual_month = days[:history_days], days[history_days:]
    f = forecast(month, actual_month[:known_days], history)
    actual = sum(actual_month, Decimal(0))
    return f.expected, actual, f.low <= actual <= f.high


@pytest.mark.parametrize("known_days", [15])
def test_mid_month_backtest_error_under_ten_percent(
    known_days: int, capsys: pytest.CaptureFixture[str]
) -> None:
    errors, covered = [], 0
    for seed, month in enumerate(MONTHS * 2):
        expected, actual, inside = _backtest(month, seed, known_days)
        errors.append(abs(expected - actual) / actual)
        covered += inside
    mean_error = fmean(float(e) for e in errors)
    worst = max(errors)
    coverage = covered / len(errors)
    with capsys.disabled():  # shown in every run, not only when it fails
        print(
            f"\nforecast backtest at day {known_days}: {len(errors)} simulated months, "
            f"mean abs error {mean_error:.2%}, worst {float(worst):.2%}, "
            f"80% interval covered {coverage:.0%}"
        )
    assert mean_error < 0.10
    assert coverage >= 0.7


def test_the_forecast_is_exact_at_month_end_and_for_a_clean_weekly_pattern() -> None:
    month = date(2025, 9, 1)  # starts on a Monday
    days = daily_spend(3, month - timedelta(days=28), 28 + 30)
    done = forecast(month, days[28:], days[:28])
    assert done.expected == done.low == done.high == sum(days[28:], Decimal(0))
    # A clean weekly pattern is forecast exactly: 4 weeks of 5 x 100 + 2 x 40,
    # then Monday and Tuesday. Without the weekday factors it would not be.
    week = [Decimal(100)] * 5 + [Decimal(40)] * 2
    f = forecast(month, (week * 2)[:12], week * 4)  # known through Friday 12th
    assert f.expected == f.low == f.high == Decimal(4 * 580 + 200)
