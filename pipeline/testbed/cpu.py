"""CPU seconds of the processes a bench measures, from Linux's /proc: a
process's own time and that of its children, live or reaped (PostgreSQL's
backends come and go with the connections; their time stays with the
postmaster once they exit)."""

from __future__ import annotations

import os
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
