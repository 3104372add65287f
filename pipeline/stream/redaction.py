"""What a dead letter, a dead-letter topic or a log line may keep of input:
the line as sent, except that

- the value of any key that names prompt or completion text, or whose name
  contains key, token, secret, password, authorization or credential (any
  case, any depth), is replaced; the contracts' own fields (``input_tokens``
  and the other counts) are not credentials and stay;
- strings shaped like credentials are masked wherever they stand: provider
  keys (``sk-...``), AWS access keys (``AKIA...``, ``ASIA...``), bearer
  tokens, JSON Web Tokens and Slack tokens (``xoxb-...``);
- a line that cannot be parsed but names such a key is not kept at all,
  only its size, and so is a line beyond the size a dead letter keeps
  (:func:`kept_whole` tells a dead letter kept as sent from such a stand-in).

Nothing a dead letter holds can leak a prompt or a key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any, Final

from models.contracts import TEXT_FIELDS, CacheEvent, GpuTelemetrySample, UsageEvent

REDACTED: Final = "<redacted>"
SECRET_WORDS: Final = ("key", "token", "secret", "password", "authorization", "credential")
# Fields of our own contracts: counts and names, never credentials.
CONTRACT_FIELDS: Final = frozenset(
    {*UsageEvent.model_fields, *GpuTelemetrySample.model_fields, *CacheEvent.model_fields}
)
# Each shape starts a word: "task-12345678" holds no key.
_SECRET_VALUE: Final = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_\-]{8,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{12,}"
    r"|Bearer\s+[A-Za-z0-9._~+/=\-]{8,}"
    r"|eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"
    r"|xox[abposr]-[A-Za-z0-9\-]{8,})"
)
_SECRET_BYTES: Final = re.compile(_SECRET_VALUE.pattern.encode())
_QUOTED: Final = re.compile(rb'"((?:[^"\\]|\\.){0,200})"')
# How much of an oversized message a dead letter keeps.
MAX_RAW_BYTES: Final = 65536


def is_sensitive(key: str) -> bool:
    """Does a key name prompt text or a credential?"""
    name = key.lower()
    if name in CONTRACT_FIELDS:
        return False
    return name in TEXT_FIELDS or any(word in name for word in SECRET_WORDS)


def redact(raw: bytes) -> bytes:
    """``raw`` without prompt text or credentials (see the module docstring)."""
    if len(raw) > MAX_RAW_BYTES:
        digest = hashlib.sha256(raw).hexdigest()
        return f"<{len(raw)} bytes, sha256 {digest}, not kept>".encode()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        if any(is_sensitive(_unquoted(m)) for m in _QUOTED.findall(raw)):
            return f"<unparseable line naming a text or secret key, {len(raw)} bytes>".encode()
        return _SECRET_BYTES.sub(REDACTED.encode(), raw)
    cleaned, changed = _scrub(doc)
    if changed:
        raw = json.dumps(cleaned, separators=(",", ":"), ensure_ascii=False).encode()
    return _SECRET_BYTES.sub(REDACTED.encode(), raw)


_STAND_IN: Final = re.compile(
    rb"^<(?:\d+ bytes, sha256 [0-9a-f]{64}, not kept"
    rb"|unparseable line naming a text or secret key, \d+ bytes)>$"
)


def kept_whole(raw: bytes) -> bool:
    """Is ``raw`` the line (perhaps redacted), not a stand-in for one that
    was not kept? Only such a line can be replayed."""
    return not _STAND_IN.match(raw)


def mask(text: str) -> str:
    """``text`` with every credential-shaped string masked (log lines)."""
    return _SECRET_VALUE.sub(REDACTED, text)


def redact_logs() -> None:
    """Mask credential-shaped strings in every log record this process
    makes, whoever logs it (a driver error can quote a statement)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging's own handler reports it
            return record
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _unquoted(inner: bytes) -> str:
    try:
        return str(json.loads(b'"' + inner + b'"'))
    except (ValueError, UnicodeDecodeError):
        return inner.decode("utf-8", "replace")


def _scrub(doc: Any, depth: int = 0) -> tuple[Any, bool]:
    if depth > 64:
        return REDACTED, True
    if isinstance(doc, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if is_sensitive(key):
                out[key], changed = REDACTED, True
            else:
                out[key], sub = _scrub(value, depth + 1)
                changed |= sub
        return out, changed
    if isinstance(doc, list):
        items = [_scrub(v, depth + 1) for v in doc]
        return [v for v, _ in items], any(c for _, c in items)
    return doc, False
