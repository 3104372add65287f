"""What a dead letter may keep of a rejected line: the line as sent, except
that values of prompt/completion keys (at any depth) and of credential keys
are replaced, strings shaped like API keys or bearer tokens are masked, and
a line that cannot be parsed but names a text key is not kept at all, only
its size. Nothing a dead letter holds can leak a prompt or a key.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

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
