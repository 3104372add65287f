"""A message as the stages see it, and its NDJSON lines.

A message value holds one event or NDJSON lines of events (the design's
contract); blank lines are not lines. Positions (partition, offset, line)
name where every event came from, for offsets and dead letters.
"""

from __future__ import annotations

from collections import Counter
from typing import Final, NamedTuple

import polars as pl

JSON_WS: Final = b" \t\r\n"
# Where a line is: (partition, offset, line within the message).
Position = tuple[int, int, int]


class Message(NamedTuple):
    # A tuple: the fetcher makes one per record, and a tuple is made in a
    # fraction of a frozen dataclass's time.
    partition: int
    offset: int
    value: bytes


def split_lines(value: bytes) -> list[bytes]:
    return [line for line in value.split(b"\n") if line.strip(JSON_WS)]


def raw_line(value: bytes, line: int) -> bytes:
    """Line ``line`` of a message value (the whole value if it has no such line)."""
    lines = split_lines(value)
    return lines[line] if 0 <= line < len(lines) else value


def count_by_partition(events: pl.DataFrame) -> Counter[int]:
    """Rows per partition of a decoded frame (its ``partition`` column)."""
    return Counter(dict(events.group_by("partition").len().iter_rows()))
