from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from pipeline.ingest.body import BadEncoding, TooLarge, read_body


def read(body: bytes, encoding: str | None = None, declared: str | None = None,
         limit: int = 1000) -> bytes:  # fmt: skip
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    return asyncio.run(read_body(chunks(), encoding, declared, limit))


def test_bodies_within_the_bound_are_read_and_inflated() -> None:
    assert read(b"x" * 1000) == b"x" * 1000
    assert read(gzip.compress(b"y" * 1000), "gzip") == b"y" * 1000
    assert read(zlib.compress(b"z" * 10), "deflate") == b"z" * 10


@pytest.mark.parametrize(
    ("body", "encoding", "declared"),
    [
        (b"x" * 1001, None, None),  # on the wire
        (b"x", None, "5000"),  # declared
        (gzip.compress(b"\0" * 1_000_000), "gzip", None),  # a bomb
    ],
)
def test_bodies_beyond_the_bound_are_too_large(body: bytes, encoding: str | None,
                                               declared: str | None) -> None:  # fmt: skip
    with pytest.raises(TooLarge):
        read(body, encoding, declared)


def test_unknown_or_broken_encodings_are_refused() -> None:
    with pytest.raises(BadEncoding):
        read(b"x", "br")
    with pytest.raises(BadEncoding):
        read(b"not gzip", "gzip")


def test_truncated_gzip_is_refused_and_every_member_is_read() -> None:
    whole = gzip.compress(b"line\n" * 1000)
    with pytest.raises(BadEncoding):
        read(whole[: len(whole) // 2], "gzip", limit=10_000)
    assert read(gzip.compress(b"a\n") + gzip.compress(b"b\n"), "gzip") == b"a\nb\n"
