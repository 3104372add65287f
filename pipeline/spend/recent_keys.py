"""The event keys this worker has committed recently, in memory.

A fast path, never the authority: a key found here was committed to
``seen_event`` by this process, so its event is certainly a duplicate; a key
not found here may still be one, and the database's primary key decides.
Keys are added only after their transaction committed. The newest keys are
kept, up to a capacity (about 160 bytes of memory each, measured: a key and
a payload fingerprint of 72 characters, its set slot and its chunk's):
re-sends mostly arrive soon after the original.
"""

from __future__ import annotations

from collections import deque

import polars as pl


class RecentKeys:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._keys: set[str] = set()
        # Chunks in commit order, so the oldest can be forgotten as a whole.
        self._chunks: deque[list[str]] = deque()

    def known(self, keys: pl.Series) -> pl.Series:
        """For each key: was it committed by this worker recently?"""
        seen = self._keys
        return pl.Series(values=[k in seen for k in keys.to_list()], dtype=pl.Boolean())

    def add(self, keys: pl.Series) -> None:
        chunk = keys.to_list()
        if not chunk:
            return
        self._chunks.append(chunk)
        self._keys.update(chunk)
        while len(self._keys) > self._capacity and len(self._chunks) > 1:
            self._keys.difference_update(self._chunks.popleft())

    def __len__(self) -> int:
        return len(self._keys)
