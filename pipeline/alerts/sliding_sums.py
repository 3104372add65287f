"""Per-key sums over a span of time that moves forward step by step. Pure.

The cache and energy rules compare each closed minute with a trailing day.
Summing that day again for every minute made the rules over a backfill's
minutes quadratic in their number; sliding the span reads only the part that
enters it and the part that leaves it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import datetime
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Sums = dict[K, tuple[int, ...]]
# The per-key sums of the rows in [start, stop).
Reader = Callable[[datetime, datetime], Iterable[tuple[K, tuple[int, ...]]]]


class SlidingSums(Generic[K]):
    """``over(start, stop)`` is ``read(start, stop)`` summed per key, keys
    whose sums are all zero left out. When the span moved forward and still
    overlaps the last one, only what entered and what left are read."""

    def __init__(self, read: Reader[K]) -> None:
        self._read = read
        self._span: tuple[datetime, datetime] | None = None
        self._sums: Sums[K] = {}

    def over(self, start: datetime, stop: datetime) -> Sums[K]:
        last = self._span
        if last is None or start < last[0] or stop < last[1] or start >= last[1]:
            self._sums = {}
            self._add(start, stop, 1)
        else:
            self._add(last[1], stop, 1)
            self._add(last[0], start, -1)
        self._span = (start, stop)
        return _nonzero(self._sums)

    def _add(self, start: datetime, stop: datetime, sign: int) -> None:
        if start >= stop:
            return
        for key, values in self._read(start, stop):
            moved = tuple(sign * v for v in values)
            old = self._sums.get(key)
            self._sums[key] = (
                moved if old is None else tuple(a + b for a, b in zip(old, moved, strict=True))
            )


def _nonzero(sums: Sums[K]) -> Sums[K]:
    return {k: v for k, v in sums.items() if any(v)}
