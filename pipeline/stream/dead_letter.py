"""The one dead-letter contract, for every agent and topic.

A line that cannot be counted (not JSON, not an object, a schema violation,
prompt text, too large, out of the admitted time, a conflicting re-send, an
out-of-order sample) becomes one :class:`DeadLetter`: its place in the log,
a reason (a category before the first colon, as ``schema: ...``), and the
raw bytes after :func:`pipeline.stream.redaction.redact`.

Every dead letter of a batch, whether found while the batch was prepared or
inside its transaction, is

1. published to the topic's dead-letter topic (``<topic>-dlq``; for usage
   ``FINOPS_USAGE_DLQ_TOPIC``), keyed by the source partition, the redacted
   line as value, headers ``reason``, ``partition``, ``offset`` and
   ``line`` (:func:`headers`), and acknowledged by the broker
2. before the transaction that writes its ``dead_letter`` row and advances
   the offsets past it commits (:meth:`pipeline.stream.offsets.OffsetSink.commit`);
3. and the batch is acked only after that commit.

So the table holds each dead letter exactly once (it is written with the
offsets), and the topic at least once: a crash between the publish and the
commit redelivers the batch, which publishes its dead letters again.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from models.contracts import BAD_IDENTIFIER
from pipeline.stream.redaction import redact


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    line: int  # 0-based line within the message
    reason: str
    raw: bytes


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def dead_letter(partition: int, offset: int, line: int, reason: str, raw: bytes) -> DeadLetter:
    """The one way to build a dead letter: its raw bytes always pass
    ``redact``, and its reason holds no control character (a key named with
    a NUL would otherwise make the reason one PostgreSQL text cannot hold)."""
    printable = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", reason)
    return DeadLetter(partition, offset, line, printable[:1000], redact(raw))


def reason_for(exc: ValidationError) -> str:
    """A short, stable reason: a category, then pydantic's first errors."""
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds:
        category = "not_json"
    elif any(e["type"] == "model_type" and not e["loc"] for e in errors):
        category = "not_object"
    elif any("prompt/completion text" in str(e.get("msg", "")) for e in errors):
        category = "text_field"
    elif any(BAD_IDENTIFIER in str(e.get("msg", "")) for e in errors):
        category = BAD_IDENTIFIER
    else:
        category = "schema"
    detail = "; ".join(
        f"{'.'.join(str(p)[:64] for p in e['loc']) or '<event>'}: {e['msg']}" for e in errors[:5]
    )
    return f"{category}: {detail}"[:1000]


# Publishes a batch's dead letters and returns once the broker acknowledged them.
PublishDead = Callable[[Sequence[DeadLetter]], Awaitable[None]]


async def table_only(dead: Sequence[DeadLetter]) -> None:
    """No dead-letter topic: the table alone (sinks driven outside a worker)."""


def headers(d: DeadLetter) -> dict[str, bytes]:
    """The headers every dead-letter message carries."""
    return {
        "reason": d.reason.encode(),
        "partition": str(d.partition).encode(),
        "offset": str(d.offset).encode(),
        "line": str(d.line).encode(),
    }
