"""What a rejected input line becomes: its place in the log, the reason, the raw bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from models.contracts import TEXT_FIELDS

REDACTED = "<redacted>"


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    line: int  # 0-based line within the message
    reason: str
    raw: bytes


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
    else:
        category = "schema"
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<event>'}: {e['msg']}" for e in errors[:5]
    )
    return f"{category}: {detail}"[:1000]


def redact(raw: bytes) -> bytes:
    """Blank the values of text-bearing keys, so a dead letter never stores a prompt."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw
    if isinstance(doc, dict):
        for key in TEXT_FIELDS.intersection(doc):
            doc[key] = REDACTED
        return json.dumps(doc, separators=(",", ":")).encode()
    return raw
