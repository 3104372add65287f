"""PostgreSQL's binary COPY format, for frames of fixed-width columns. Pure.

``COPY ... (FORMAT binary)`` spares the server parsing every uuid and
timestamp from text: on ``seen_event`` (two uuids and a timestamp per event,
the largest write of the spend path) that is 40% of the COPY's time. Every
row of such a frame has the same layout, so the whole payload is one numpy
record array, built without a Python loop (psycopg's own binary COPY writes
row by row in Python). Layout per the PostgreSQL manual, "COPY, Binary
Format": a signature and two zero words, then per row the field count and
each field as a 4-byte length and its big-endian value, then a -1 trailer.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from typing import Final

import numpy as np
import polars as pl

_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER: Final = struct.pack(">h", -1)
# PostgreSQL counts timestamps in microseconds from 2000-01-01 UTC.
_PG_EPOCH_US: Final = 946_684_800 * 1_000_000
_PG_EPOCH_DAYS: Final = 10_957  # 2000-01-01, in days from 1970-01-01 (dates)
_INTS: Final[dict[pl.DataType, str]] = {pl.Int64(): ">i8", pl.Int32(): ">i4", pl.Int16(): ">i2"}


def encode(frame: pl.DataFrame, uuids: Collection[str] = ()) -> bytes:
    """``frame`` as a binary COPY payload, columns in order. The ``uuids``
    columns hold uuids as 32 hex digits; the others are UTC microsecond
    datetimes (timestamptz), dates or integers. Nulls have no fixed width: refused."""
    if frame.null_count().sum_horizontal().item():
        raise ValueError("binary COPY of fixed-width columns cannot carry nulls")
    layout: list[tuple[str, str]] = [("fields", ">i2")]
    values: dict[str, np.ndarray] = {}
    for name, dtype in frame.schema.items():
        column = frame[name]
        if name in uuids:
            raw = bytes.fromhex("".join(column.to_list()))
            if len(raw) != 16 * frame.height:
                raise ValueError(f"{name}: not all 32 hex digits")
            fmt, value = "S16", np.frombuffer(raw, dtype="S16")
        elif dtype == pl.Datetime("us", "UTC"):
            fmt, value = ">i8", column.dt.epoch("us").to_numpy() - _PG_EPOCH_US
        elif dtype == pl.Date():
            fmt, value = ">i4", column.to_physical().to_numpy() - _PG_EPOCH_DAYS
        elif dtype in _INTS:
            fmt, value = _INTS[dtype], column.to_numpy()
        else:
            raise TypeError(f"{name}: {dtype} has no fixed-width binary form here")
        layout += [(f"{name}_len", ">i4"), (name, fmt)]
        values[name] = value
    rows = np.empty(frame.height, dtype=np.dtype(layout))
    rows["fields"] = frame.width
    for name, value in values.items():
        rows[f"{name}_len"] = rows.dtype[name].itemsize
        rows[name] = value
    return _HEADER + rows.tobytes() + _TRAILER
