"""Hostile input for the poison scenario. Pure: lines and messages only.

Every hostile line is exactly one dead letter (or, for an extra credential
field on a valid event, one counted event that must not store the field).
The canaries are strings that must never reach the database, a log, or a
dead-letter store: ``finops chaos`` searches all three for them.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any, Final

CANARY_PROMPT: Final = "CANARY-PROMPT-5f0c1e-do-not-store"
CANARY_KEY: Final = "sk-canary-0000CANARYKEY0000a1b2c3"
CANARIES: Final = (CANARY_PROMPT, CANARY_KEY)


def _line(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode()


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def hostile_lines(rng: random.Random, template: dict[str, Any], now: datetime) -> list[bytes]:
    """One of each kind of hostile line, built around a valid event."""
    ev = dict(template, event_id=f"poison-{rng.getrandbits(64):016x}")

    def variant(**changes: Any) -> dict[str, Any]:
        return dict(ev, event_id=f"poison-{rng.getrandbits(64):016x}", **changes)

    noise = bytes(b for b in rng.randbytes(200) if b not in b"\n\r\t ") or b"\x00"
    return [
        noise,  # random bytes
        _line(variant(tenant="x")).replace(b'"x"', b'"\xff\xfe\xfd"'),  # invalid UTF-8
        _line(variant(input_tokens=10**30)),  # huge number
        _line(variant())[:-1] + b',"latency_ms":NaN}',  # NaN
        _line(variant())[:-1] + b',"output_tokens":1e400}',  # overflowing float
        b'{"a":' * 3000 + b"1" + b"}" * 3000,  # deep nesting
        _line(variant(prompt=CANARY_PROMPT)),  # prompt text: rejected, redacted
        _line(variant(meta={"messages": [{"role": "user", "content": CANARY_PROMPT}]})),
        f'{{"completion": "{CANARY_PROMPT}", "tenant": '.encode(),  # broken, with text
        _line(variant(attempt=0, api_key=CANARY_KEY)),  # invalid, carries a key
        _line(variant(authorization=f"Bearer {CANARY_KEY}")),  # valid; key never stored
        _line(variant(ts=_ts(now - timedelta(days=400)))),  # too old
        _line(variant(ts=_ts(now + timedelta(days=1)))),  # in the future
    ]


def conflicting(line: bytes) -> bytes:
    """The same (tenant, node_id, event_id) with a different payload."""
    ev = json.loads(line)
    ev["output_tokens"] = ev["output_tokens"] + 1_000_000
    return _line(ev)


def oversized(max_message_bytes: int, template: dict[str, Any]) -> bytes:
    """One line, and so one message, larger than the stream accepts."""
    pad = "x" * (max_message_bytes + 10_000)
    return _line(dict(template, event_id="poison-oversized", padding=pad))
