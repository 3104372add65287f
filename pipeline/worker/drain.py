"""``finops worker --drain``: run until every watched sink has committed
every partition up to the end offsets snapshotted at start, then finish
(split the energy, judge the minutes, notify) and stop.

A drain that cannot advance is stalled rather than waited on forever: when
no sink has moved for ``stall_s``, or the finishing energy split keeps
failing that long. Time spent waiting for PostgreSQL itself is progress:
the sinks and the split wait out a database outage by design.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

# partition -> next offset to apply, as a sink reports it
Applied = Mapping[int, int]
# A poll that takes longer than this waited for the database: progress.
SLOW_POLL_S = 5.0


@dataclass
class DrainProgress:
    """Poll by poll: caught up, still going, or stalled. Pure: the times
    come in with each poll."""

    targets: Sequence[Mapping[int, int]]  # per watched sink: partition -> end offset
    stall_s: float
    _total: int = field(default=-1, init=False)  # offsets applied at the last progress
    _since: float = field(default=0.0, init=False)  # when that was

    def step(
        self, applied: Sequence[Applied], polled_at: float, answered_at: float
    ) -> Literal["done", "going", "stalled"]:
        if all(
            all(done.get(p, 0) >= end for p, end in target.items())
            for done, target in zip(applied, self.targets, strict=True)
        ):
            return "done"
        total = sum(sum(done.values()) for done in applied)
        if total != self._total or answered_at - polled_at > SLOW_POLL_S:
            self._total, self._since = total, answered_at
        elif answered_at - self._since > self.stall_s:
            return "stalled"
        return "going"


@dataclass(frozen=True)
class DrainEnd:
    drained: bool
    why: str = ""  # what stalled


async def drain(
    readers: Sequence[Callable[[], Awaitable[Applied]]],
    progress: DrainProgress,
    finish: Callable[[], Awaitable[bool]],
    *,
    clock: Callable[[], float] = time.monotonic,
    poll_s: float = 0.2,
) -> DrainEnd:
    """Poll ``readers`` (one per watched sink) until ``progress`` says done,
    then ``finish``, which returns False when the energy split kept failing."""
    while True:
        polled = clock()
        applied = [await read() for read in readers]
        verdict = progress.step(applied, polled, clock())
        if verdict == "stalled":
            return DrainEnd(False, "no sink advanced")
        if verdict == "done":
            break
        await asyncio.sleep(poll_s)
    if not await finish():
        return DrainEnd(False, "the energy split kept failing")
    return DrainEnd(True)
