"""The bench's last line, for one round and for interleaved rounds."""

from __future__ import annotations

from pipeline.testbed.bench import joins_ratio


def test_one_round_is_the_ratio_of_the_pipeline_rates() -> None:
    assert joins_ratio([80_000.0], [60_000.0]) == (
        "joins ratio (joined / spend path alone, pipeline rates): 0.75"
    )


def test_rounds_report_their_median_and_each_round_in_order() -> None:
    line = joins_ratio([70_000.0, 60_000.0, 80_000.0], [49_000.0, 48_000.0, 44_000.0])
    assert line == (
        "joins ratio (joined / spend path alone, pipeline rates): 0.70"
        " (median of 3 rounds: 0.70, 0.80, 0.55)"
    )


def test_the_per_op_shape_has_a_ratio_line_of_its_own() -> None:
    assert joins_ratio([80_000.0], [76_000.0], "per-op") == (
        "joins ratio, per-op (per-op / spend path alone, pipeline rates): 0.95"
    )
