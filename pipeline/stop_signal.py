"""SIGTERM is how a supervisor (Kubernetes, systemd, the chaos harness)
stops a worker, and it may send it at any moment: also during the seconds a
loaded machine spends importing faust, polars and SQLAlchemy, or waiting for
the broker, before faust installs its own handler and after faust's loop has
closed (which puts the default back). A worker stopped then holds nothing
uncommitted, so it exits 0 at once instead of dying by the signal.

Imported for its effect, first thing in ``pipeline.cli``: only the ``worker``
command gets the handler; every other command keeps the default."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import NoReturn


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def exit_cleanly_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, _exit_cleanly)


def is_worker(argv: list[str]) -> bool:
    return argv[1:2] == ["worker"]


if is_worker(sys.argv):
    exit_cleanly_on_sigterm()
