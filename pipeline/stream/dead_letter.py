"""What a rejected input line becomes: its place in the log, the reason, and
the raw bytes with anything that looks like prompt text or a secret removed.

Dead letters are kept for review and replay, so they hold the line as sent,
except: values of prompt/completion keys (at any depth) and of credential
keys are replaced, strings shaped like API keys or bearer tokens are masked,
and a line that cannot be parsed but names a text key is not kept at all,
only its size. Nothing a dead letter holds can leak a prompt or a key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from models.contracts import TEXT_FIELDS

REDACTED: Final = "<redacted>"
SECRET_FIELDS: Final = frozenset(
    {"api_key", "apikey", "authorization", "x-api-key", "password", "secret", "access_token"}
)
# Shapes of credentials that travel in request logs: provider keys (sk-...,
# sk-ant-..., AKIA...) and bearer tokens.
_SECRET_VALUE: Final = re.compile(
    rb"(?:sk-[A-Za-z0-9_\-]{8,}|AKIA[A-Z0-9]{12,}|Bearer\s+[A-Za-z0-9._~+/=\-]{8,})"
)
_TEXT_KEY: Final = re.compile(
    rb'"(?:'
    + b"|".join(re.escape(k.encode()) for k in sorted(TEXT_FIELDS | SECRET_FIELDS))
    + rb')"',
    re.IGNORECASE,
)
# How much of an oversized message a dead letter keeps.
MAX_RAW_BYTES: Final = 65536


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    line: int  # 0-based line within the message
    reason: str
    raw: bytes


def dead_letter(partition: int, offset: int, line: int, reason: str, raw: bytes) -> DeadLetter:
    """The one way to build a dead letter: its raw bytes always pass ``redact``."""
    return DeadLetter(partition, offset, line, reason[:1000], redact(raw))


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
        f"{'.'.join(str(p)[:64] for p in e['loc']) or '<event>'}: {e['msg']}" for e in errors[:5]
    )
    return f"{category}: {detail}"[:1000]


def redact(raw: bytes) -> bytes:
    """``raw`` without prompt text or credentials (see the module docstring)."""
    if len(raw) > MAX_RAW_BYTES:
        digest = hashlib.sha256(raw).hexdigest()
        return f"<{len(raw)} bytes, sha256 {digest}, not kept>".encode()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        if _TEXT_KEY.search(raw):
            return f"<unparseable line naming a text or secret key, {len(raw)} bytes>".encode()
        return _SECRET_VALUE.sub(REDACTED.encode(), raw)
    cleaned, changed = _scrub(doc)
    if changed:
        raw = json.dumps(cleaned, separators=(",", ":"), ensure_ascii=False).encode()
    return _SECRET_VALUE.sub(REDACTED.encode(), raw)


def _scrub(doc: Any, depth: int = 0) -> tuple[Any, bool]:
    if depth > 64:
        return REDACTED, True
    if isinstance(doc, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key.lower() in TEXT_FIELDS or key.lower() in SECRET_FIELDS:
                out[key], changed = REDACTED, True
            else:
                out[key], sub = _scrub(value, depth + 1)
                changed |= sub
        return out, changed
    if isinstance(doc, list):
        items = [_scrub(v, depth + 1) for v in doc]
        return [v for v, _ in items], any(c for _, c in items)
    return doc, False
