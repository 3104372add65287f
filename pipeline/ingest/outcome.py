"""What a front door made of one request: usage lines our contract accepts,
and the items it could not map, each with a reason. Pure.

Every door builds its events as fields and passes them through
:func:`event_line`, so nothing reaches the usage topic that the contract
refuses: the workers see the same events a producer speaking our contract
would have sent. A refused item keeps, as its evidence, only what the door
read of it (identifiers and counts, never prompt or completion text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from models.contracts import UsageEvent
from pipeline.stream.dead_letter import reason_for

# An event of ours is a few hundred bytes; a line beyond this is not one.
MAX_LINE_BYTES: Final = 16_384


@dataclass(frozen=True)
class Refused:
    item: int  # the item's place in the request (0-based)
    reason: str
    evidence: bytes


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

    def refuse(self, item: int, reason: str, evidence: dict[str, Any] | bytes) -> None:
        raw = evidence if isinstance(evidence, bytes) else _json(evidence)
        self.refused.append(Refused(item, reason, raw))

    def add(self, item: int, fields: dict[str, Any]) -> None:
        """The event these fields make, or its refusal."""
        line, reason = event_line(fields)
        if line is None:
            self.refuse(item, reason, fields)
        else:
            self.accept(line, str(fields["tenant"]))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


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
