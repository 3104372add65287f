"""The binary COPY encoder: exact bytes by hand for one row, the layout for
any frame, and what it refuses (the real server reads it in
tests/integration/test_sink_properties.py)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.stream import pg_binary
from tests.factories import utc_datetimes

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
TRAILER = b"\xff\xff"


def test_one_row_byte_by_byte() -> None:
    frame = pl.DataFrame(
        {
            "key": ["00112233445566778899aabbccddeeff"],
            "ts": [datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC)],
            "n": [-2],
        },
        schema={"key": pl.String(), "ts": pl.Datetime("us", "UTC"), "n": pl.Int32()},
    )
    row = (
        b"\x00\x03"  # three fields
        + b"\x00\x00\x00\x10"
        + bytes(range(0x00, 0x100, 0x11))  # the uuid's 16 bytes
        + b"\x00\x00\x00\x08"
        + (1_000_000).to_bytes(8, "big")  # one second after PostgreSQL's epoch
        + b"\x00\x00\x00\x04"
        + b"\xff\xff\xff\xfe"  # -2
    )
    assert pg_binary.encode(frame, uuids=("key",)) == HEADER + row + TRAILER


@given(
    st.lists(
        st.tuples(
            st.binary(min_size=16, max_size=16),
            utc_datetimes(1970, 2100),
            st.integers(-(2**63), 2**63 - 1),
        ),
        max_size=50,
    )
)
def test_every_row_decodes_to_its_values(rows: list[tuple[bytes, datetime, int]]) -> None:
    frame = pl.DataFrame(
        {
            "key": [k.hex() for k, _, _ in rows],
            "ts": [t for _, t, _ in rows],
            "n": [n for _, _, n in rows],
        },
        schema={"key": pl.String(), "ts": pl.Datetime("us", "UTC"), "n": pl.Int64()},
    )
    payload = pg_binary.encode(frame, uuids=("key",))
    assert payload.startswith(HEADER) and payload.endswith(TRAILER)
    body = payload[len(HEADER) : -len(TRAILER)]
    layout = struct.Struct(">h i 16s i q i q")
    assert len(body) == layout.size * len(rows)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    for (key, ts, n), values in zip(rows, layout.iter_unpack(body), strict=True):
        fields, klen, kval, tlen, tval, nlen, nval = values
        assert (fields, klen, tlen, nlen) == (3, 16, 8, 8)
        assert kval == key
        assert epoch + timedelta(microseconds=tval) == ts
        assert nval == n


def test_refuses_nulls_bad_uuids_and_other_types() -> None:
    with pytest.raises(ValueError, match="nulls"):
        pg_binary.encode(pl.DataFrame({"n": [1, None]}))
    with pytest.raises(ValueError, match="32 hex"):
        pg_binary.encode(pl.DataFrame({"key": ["abcd"]}), uuids=("key",))
    with pytest.raises(TypeError, match="fixed-width"):
        pg_binary.encode(pl.DataFrame({"name": ["acme"]}))
