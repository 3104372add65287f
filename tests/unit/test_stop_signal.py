"""Which command gets the early SIGTERM handler, and with which exit code."""

from __future__ import annotations

import pytest

from pipeline.stop_signal import DRAIN_UNFINISHED, stop_code


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["finops", "worker"], 0),
        (["/x/pipeline/cli.py", "worker", "--log-level", "info"], 0),
        (["finops", "worker", "--drain"], DRAIN_UNFINISHED),
        (["finops", "worker", "--stats-file", "s.json", "--drain"], DRAIN_UNFINISHED),
        (["finops", "demo"], None),
        (["finops", "simulate", "worker"], None),
        (["finops"], None),
        (["finops", "--drain", "worker"], None),
    ],
)
def test_only_the_worker_command_stops_cleanly(argv: list[str], code: int | None) -> None:
    assert stop_code(argv) == code
