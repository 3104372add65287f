"""What a front door made of one request: usage lines our contract accepts,
and the items it could not map, each with a reason. Pure.

Every door builds its events as fields and passes them through
:func:`event_line`, so nothing reaches the usage topic that the contract
refuses: the workers see the same events a producer speaking our contract
would have sent. A refused item keeps, as its evidence, only the contract's
fields of what the door read (:func:`evidence`: identifiers and counts,
never prompt or completion text, whatever other keys the producer sent), and
the tenant it named, so a key bound to one tenant cannot file another's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from models.contracts import UsageEvent
from pipeline.stream.dead_letter import reason_for

# An event of ours is a few hundred bytes; a line beyond this is not one.
MAX_LINE_BYTES: Final = 16_384
# What evidence may keep: the contract's fields and a CloudEvent's envelope.
KEPT: Final = frozenset(UsageEvent.model_fields) | {
    "specversion", "id", "source", "type", "time", "subject"
}  # fmt: skip


@dataclass(frozen=True)
class Refused:
    item: int  # the item's place in the request (0-based)
    reason: str
    evidence: bytes
    tenant: str | None = None  # the tenant the item named, if any


@dataclass
class Mapped:
    lines: list[bytes] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)  # of each line, in order
    refused: list[Refused] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)  # said back to the client
    skipped: int = 0  # items that are not usage (spans of other work)

    def accept(self, line: bytes, tenant: str) -> None:
        self.lines.append(line)
        self.tenants.append(tenant)

    def refuse(self, item: int, reason: str, read: object) -> None:
        """Refuse an item; ``read`` is what the door read of it (a mapping,
        or a line of JSON: only its :data:`KEPT` fields are kept)."""
        read = _as_object(read)
        tenant = read.get("tenant") if isinstance(read, dict) else None
        self.refused.append(
            Refused(item, reason, evidence(read), tenant if isinstance(tenant, str) else None)
        )

    def add(self, item: int, fields: dict[str, Any]) -> None:
        """The event these fields make, or its refusal."""
        line, reason = event_line(fields)
        if line is None:
            self.refuse(item, reason, fields)
        else:
            self.accept(line, str(fields["tenant"]))

    def named_tenants(self) -> set[str]:
        """Every tenant the request's items named, accepted or refused."""
        return set(self.tenants) | {r.tenant for r in self.refused if r.tenant is not None}


def _default(value: object) -> str:
    if isinstance(value, datetime):  # RFC 3339, as the contract reads it
        return value.isoformat().replace("+00:00", "Z")
    return type(value).__name__


def _as_object(read: object) -> object:
    """A line of JSON as its object, if it is one."""
    if not isinstance(read, bytes):
        return read
    try:
        doc = json.loads(read)
    except (ValueError, RecursionError):
        return {"unparseable_bytes": len(read)}
    return doc if isinstance(doc, dict) else {"not_an_object": type(doc).__name__}


def evidence(read: object) -> bytes:
    """The :data:`KEPT` fields of a mapping (scalars only, strings cut
    short), or a note of what the item was."""
    read = _as_object(read)
    if not isinstance(read, dict):
        return json.dumps({"not_an_object": type(read).__name__}).encode()
    kept = {
        k: (v[:300] if isinstance(v, str) else v)
        for k, v in read.items()
        if (k in KEPT or k in ("unparseable_bytes", "not_an_object"))
        and (v is None or isinstance(v, str | int | float | bool | datetime))
    }
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def event_line(fields: dict[str, Any]) -> tuple[bytes | None, str]:
    """The NDJSON line of a usage event, or None and why the contract refused it."""
    missing = sorted(k for k in ("tenant", "route", "feature", "node_id") if fields.get(k) is None)
    if missing:
        return None, f"unmapped: no value for {', '.join(missing)} (see the mapping file)"
    try:
        event = UsageEvent.model_validate(fields)
    except ValidationError as exc:
        return None, reason_for(exc)
    return event.model_dump_json(exclude_none=True).encode(), ""
