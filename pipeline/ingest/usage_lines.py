"""``POST /v1/usage``: our own contract as NDJSON, for simple gateways. Pure.

Each line is judged by the contract exactly as a worker would judge it; an
accepted line is published as sent (byte for byte, so its fingerprint is the
one the producer would get by publishing to Kafka itself).
"""

from __future__ import annotations

from models.contracts import UsageEvent
from pipeline.ingest.outcome import MAX_LINE_BYTES, Mapped
from pipeline.stream.message import split_lines
from pipeline.stream.ndjson import judge


def map_lines(body: bytes) -> Mapped:
    out = Mapped()
    for i, raw in enumerate(split_lines(body)):
        if len(raw) > MAX_LINE_BYTES:
            out.refuse(i, f"too_large: {len(raw)} bytes, at most {MAX_LINE_BYTES}", raw)
            continue
        event, reason = judge(UsageEvent, raw)
        if event is None:
            out.refuse(i, reason, raw)
        else:
            out.accept(raw.strip(), event.tenant)
    return out
