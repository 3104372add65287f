"""CPU seconds and memory of the processes a bench measures, from Linux's
/proc: a process's own time and that of its children, live or reaped
(PostgreSQL's backends come and go with the connections; their time stays
with the postmaster once they exit), and resident memory over a run."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (f := _fields(int(entry.name))) and int(f[1]) == pid:
            out.append(int(entry.name))
    return out


def tree_cpu_s(pid: int | None) -> float | None:
    """User and system seconds of ``pid`` and all its descendants, reaped
    ones included (None: no such process)."""
    if pid is None or (f := _fields(pid)) is None:
        return None
    # utime, stime, cutime, cstime are fields 14-17 of stat; 12-15 here.
    own = sum(int(x) for x in f[11:15]) / _TICK
    return own + sum(tree_cpu_s(c) or 0.0 for c in _children(pid))


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` now, in MB (None: no such process)."""
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident * _PAGE / 1e6


class RssSampler:
    """Samples the resident memory of some processes every ``every_s`` in a
    thread, until :meth:`stop`: its peak, and how much it grew over the
    second half of the samples (flat memory grows by about nothing)."""

    def __init__(self, pids: list[int], every_s: float = 0.5) -> None:
        self._pids = pids
        self._every_s = every_s
        self.samples: list[float] = []  # the sum over the processes
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._every_s):
            # A process that exited but is not yet reaped has no memory: 0.
            now = [r for p in self._pids if (r := rss_mb(p))]
            if now:
                self.samples.append(sum(now))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return peak_mb(self.samples)

    @property
    def second_half_growth_mb(self) -> float:
        return second_half_growth_mb(self.samples)


def peak_mb(samples: Sequence[float]) -> float:
    return max(samples, default=0.0)


def second_half_growth_mb(samples: Sequence[float]) -> float:
    """How much memory grew from the middle sample to the last (flat memory
    grows by about nothing)."""
    if len(samples) < 2:
        return 0.0
    return samples[-1] - samples[len(samples) // 2]
