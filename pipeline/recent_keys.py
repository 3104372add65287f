"""The event keys this worker has committed recently, in memory.

A fast path, never the authority: a key found here was committed to
``seen_event`` by this process, so its event is certainly a duplicate; a key
not found here may still be one, and the database's primary key decides.
Keys are added only after their transaction committed. The newest keys are
kept, up to a capacity: re-sends mostly arrive soon after the original.
"""

from __future__ import annotations

from collections import deque

import polars as pl


class RecentKeys:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._chunks: deque[pl.Series] = deque()
        self._size = 0
        self._all: pl.Series | None = None

    def known(self, keys: pl.Series) -> pl.Series:
        """For each key: was it committed by this worker recently?"""
        if not self._chunks:
            return pl.Series(values=[False] * len(keys), dtype=pl.Boolean())
        if self._all is None:
            self._all = pl.concat(list(self._chunks), rechunk=True)
        return keys.is_in(self._all)

    def add(self, keys: pl.Series) -> None:
        if keys.is_empty():
            return
        self._chunks.append(keys)
        self._size += len(keys)
        self._all = None
        while self._size > self._capacity and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())

    def __len__(self) -> int:
        return self._size
