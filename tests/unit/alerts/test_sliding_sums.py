"""The trailing spans of the cache and energy rules: sliding equals summing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pipeline.alerts.sliding_sums import SlidingSums, Sums

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

# (minute, key, values): a table's rows, several per minute and key.
_rows = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.sampled_from(["acme", "globex", "initech"]),
        st.tuples(st.integers(0, 50), st.integers(-5, 50)),
    ),
    max_size=60,
)
# Spans as (start, length) in minutes: mostly sliding forward, sometimes
# jumping, shrinking or going back.
_spans = st.lists(st.tuples(st.integers(0, 45), st.integers(0, 30)), min_size=1, max_size=25)


class Table:
    """Rows in memory, read as the SQL reads them: summed per key over
    [start, stop), and the spans read kept."""

    def __init__(self, rows: list[tuple[int, str, tuple[int, int]]]) -> None:
        self.rows = rows
        self.reads: list[tuple[datetime, datetime]] = []

    def read(self, start: datetime, stop: datetime) -> Iterable[tuple[str, tuple[int, ...]]]:
        self.reads.append((start, stop))
        return self.sums(start, stop).items()

    def sums(self, start: datetime, stop: datetime) -> Sums[str]:
        out: dict[str, tuple[int, ...]] = {}
        for minute, key, (a, b) in self.rows:
            if start <= T0 + minute * MINUTE < stop:
                x, y = out.get(key, (0, 0))
                out[key] = (x + a, y + b)
        return out


def _nonzero(sums: Sums[str]) -> Sums[str]:
    return {k: v for k, v in sums.items() if any(v)}


@given(rows=_rows, spans=_spans)
def test_sliding_gives_the_sums_a_fresh_read_gives(
    rows: list[tuple[int, str, tuple[int, int]]], spans: list[tuple[int, int]]
) -> None:
    table = Table(rows)
    sliding = SlidingSums(table.read)
    for start, length in spans:
        s, e = T0 + start * MINUTE, T0 + (start + length) * MINUTE
        assert sliding.over(s, e) == _nonzero(table.sums(s, e))


@given(rows=_rows, width=st.integers(1, 30), steps=st.integers(1, 40))
def test_a_span_sliding_a_minute_at_a_time_reads_each_minute_at_most_twice(
    rows: list[tuple[int, str, tuple[int, int]]], width: int, steps: int
) -> None:
    """Once in, once out: what makes the rules over a backfill linear in
    its minutes rather than quadratic."""
    table = Table(rows)
    sliding = SlidingSums(table.read)
    for step in range(steps):
        sliding.over(T0 + step * MINUTE, T0 + (step + width) * MINUTE)
    minutes = sum((e - s) // MINUTE for s, e in table.reads)
    assert minutes <= width + 2 * (steps - 1)
