"""A request body read within its bound: at most ``limit`` bytes on the wire
and, when gzip- or deflate-encoded (OpenTelemetry Collectors compress by
default), at most ``limit`` bytes once inflated, so neither a large body nor
a small compression bomb can take the door's memory."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Final

ENCODINGS: Final = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": None}


class TooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


async def read_body(
    chunks: AsyncIterator[bytes], encoding: str | None, declared: str | None, limit: int
) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{declared} bytes, at most {limit}")
    name = (encoding or "identity").strip().lower()
    if name not in ENCODINGS:
        raise BadEncoding(f"content-encoding {name[:40]!r} (gzip, deflate or none)")
    wire = bytearray()
    async for chunk in chunks:
        wire += chunk
        if len(wire) > limit:
            raise TooLarge(f"more than {limit} bytes")
    bits = ENCODINGS[name]
    if bits is None:
        return bytes(wire)
    out, rest = bytearray(), bytes(wire)
    while True:  # gzip allows several members, one after another
        inflate = zlib.decompressobj(bits)
        try:
            out += inflate.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadEncoding(f"not {name}: {exc}") from exc
        if len(out) > limit or inflate.unconsumed_tail:
            raise TooLarge(f"more than {limit} bytes inflated")
        if not inflate.eof:  # cut short: half a body is not a body
            raise BadEncoding(f"truncated {name} data")
        rest = inflate.unused_data
        if not rest.strip(b"\0"):
            return bytes(out)
