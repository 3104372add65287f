"""Stopping a child process of ours: SIGTERM, then SIGKILL after a grace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from pipeline.embedded.runtime import stop_child

# Says it is ready once its SIGTERM handler (or lack of one) is in place.
_CHILD = "import signal, sys, time\n{handler}\nprint('ready', flush=True)\ntime.sleep(60)\n"


def _child(handler: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(handler=handler)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_child_that_stops_on_sigterm_is_stopped_by_it() -> None:
    proc = _child("")
    stop_child(proc, 10)
    assert proc.returncode == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _child("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    t0 = time.monotonic()
    stop_child(proc, 0.5)
    assert proc.returncode == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - t0 < 10
