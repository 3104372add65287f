"""The soak's memory table: the worker's RSS at each tenth of its run."""

from __future__ import annotations

from pipeline.testbed.soak import memory_table


def _rows(samples: tuple[float, ...]) -> list[tuple[str, str, str]]:
    table = memory_table(samples, 1_000_000, 25_000.0, 40.0)
    columns = [list(c.cells) for c in table.columns]
    return list(zip(*columns, strict=True))


def test_each_tenth_of_the_run_shows_its_sample_with_a_bar_of_its_share_of_the_peak() -> None:
    samples = tuple(float(100 + i) for i in range(100))  # 100 ... 199 MB
    rows = _rows(samples)
    assert [r[0] for r in rows] == [f"{t}%" for t in range(10, 101, 10)]
    assert [r[1] for r in rows] == [*(str(100 + 10 * t) for t in range(1, 10)), "199"]
    assert len(rows[-1][2]) == 40  # the peak fills the bar
    assert len(rows[0][2]) == round(40 * 110 / 199)


def test_the_title_gives_cpu_per_million_events() -> None:
    table = memory_table((1.0,), 2_000_000, 10_000.0, 80.0)
    assert "40.0 worker CPU s / M events" in str(table.title)
    assert "10,000 events/s" in str(table.title)


def test_no_samples_make_no_rows() -> None:
    assert _rows(()) == []
