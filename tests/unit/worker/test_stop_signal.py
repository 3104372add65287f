"""Which command gets the early SIGTERM handler, and with which exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.worker.stop_signal import DRAIN_UNFINISHED, stop_code


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["finops", "worker"], 0),
        (["/x/pipeline/cli/__main__.py", "worker", "--log-level", "info"], 0),
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


_HELD = """
import os, signal, sys, time
from pipeline.worker.stop_signal import exit_cleanly_on_sigterm, held

exit_cleanly_on_sigterm(75)
with held():
    if sys.argv[2] == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler has run by now, and must not have exited
    with open(sys.argv[1], "w") as f:
        f.write("written")
print("after the block")
"""


@pytest.mark.parametrize(("send", "code", "after"), [("signal", 75, False), ("none", 0, True)])
def test_a_sigterm_inside_held_exits_with_the_stop_code_once_the_block_is_done(
    tmp_path: Path, send: str, code: int, after: bool
) -> None:
    out = tmp_path / "stats.json"
    done = subprocess.run(
        [sys.executable, "-c", _HELD, str(out), send],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, out.read_text()) == (code, "written"), done.stderr
    assert ("after the block" in done.stdout) is after
