"""Calendar months, as the finance commands use them: a month is the date of
its first day, and spans [its first midnight, the next month's) in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime


class MonthError(ValueError):
    pass


def parse_month(value: str) -> date:
    """``YYYY-MM`` as the month's first day."""
    try:
        year, month = value.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError(value)
        return date(int(year), int(month), 1)
    except ValueError as exc:
        raise MonthError(f"a month is YYYY-MM, not {value!r}") from exc


def next_month(m: date) -> date:
    return date(m.year + m.month // 12, m.month % 12 + 1, 1)


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def bounds(m: date) -> tuple[datetime, datetime]:
    """The month's span in UTC: [start, end)."""
    return midnight(m), midnight(next_month(m))


def days_in(m: date) -> int:
    return (next_month(m) - m).days
