"""SIGTERM is how a supervisor (Kubernetes, systemd, the chaos harness)
stops a worker, and it may send it at any moment: also during the seconds a
loaded machine spends importing faust, polars and SQLAlchemy, or waiting for
the broker, before faust installs its own handler and after faust's loop has
closed (which puts the default back). A worker stopped then holds nothing
uncommitted, so it exits at once with the code of a clean stop instead of
dying by the signal: 0 for a service worker, and for ``worker --drain``
:data:`DRAIN_UNFINISHED`, because a drain that exits 0 claims it caught up.

Imported for its effect, first thing in ``pipeline.cli``: only the ``worker``
command gets the handler; every other command keeps the default."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final

# EX_TEMPFAIL: the drain stopped (stalled or told to) before it caught up;
# nothing uncommitted was acked, so running it again is safe.
DRAIN_UNFINISHED: Final = 75


def stop_code(argv: list[str]) -> int | None:
    """The exit code of a clean stop of this command, None if not a worker."""
    if argv[1:2] != ["worker"]:
        return None
    return DRAIN_UNFINISHED if "--drain" in argv[2:] else 0


class _Stop:
    """The handler, and whether a SIGTERM must wait for :func:`held`."""

    def __init__(self) -> None:
        self.code = 0
        self.holding = False
        self.pending = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = True
            return
        # Not SystemExit: a handler runs between any two bytecodes, also in
        # a weakref callback or a finalizer, where Python prints a raised
        # exception and carries on (CI saw one swallowed mid-import). There
        # is nothing to flush or roll back at these moments.
        os._exit(self.code)


_STOP: Final = _Stop()


def exit_cleanly_on_sigterm(code: int) -> None:
    _STOP.code = code
    signal.signal(signal.SIGTERM, _STOP)


@contextmanager
def held() -> Iterator[None]:
    """A SIGTERM that arrives inside the block exits only when it ends, so a
    stop never cuts short what the block writes (the worker's stats file).
    A flag rather than a signal mask: the mask is per thread, and the signal
    may reach any of the worker's threads."""
    _STOP.holding = True
    try:
        yield
    finally:
        _STOP.holding = False
        if _STOP.pending:  # only our handler sets it
            os._exit(_STOP.code)


_CODE = stop_code(sys.argv)
if _CODE is not None:
    exit_cleanly_on_sigterm(_CODE)
