"""``POST /v1/events``: CloudEvents 1.0, structured or batched, as OpenMeter
takes them. Pure.

- ``type: finops.usage``: ``data`` is a usage event of our contract. Its
  ``event_id`` is derived from the CloudEvent's ``(source, id)``, the pair
  CloudEvents (and OpenMeter) deduplicate by, so a batch sent twice counts
  once whatever ``data`` says; ``ts`` defaults to the CloudEvent's ``time``.
- ``type: litellm_tokens``: what LiteLLM's OpenMeter logger sends (the
  ``openmeter`` section of the mapping file says where tenant, route,
  feature and, since the event names none, the provider come from). It
  carries prompt and completion counts and no cache counts: cached input is
  billed as plain input, and the response says so.

Any other type, or an envelope without ``specversion`` 1.0, ``id``,
``source`` and ``type``, is refused with its reason.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.ingest.mapping import DoorMapping, identity, object_lookup, resolve
from pipeline.ingest.outcome import Mapped
from pipeline.stream.dead_letter import reason_for

USAGE_TYPE: Final = "finops.usage"
LITELLM_TYPE: Final = "litellm_tokens"
NO_CACHE_NOTE: Final = (
    "litellm_tokens events carry no cache counts: cached input is billed as plain input"
    " (use the generic_api callback or FinopsLogger for cache-aware costs)"
)
_Attr = Annotated[str, Field(min_length=1, max_length=1024)]


class CloudEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Annotated[str, Field(pattern=r"^1\.0$")]
    id: _Attr
    source: _Attr
    type: _Attr
    time: str | None = None
    subject: str | None = None
    data: dict[str, Any] | None = None


def event_id(source: str, id_: str) -> str:
    """A usage event id for a CloudEvent: the same for the same (source, id)."""
    return "ce-" + hashlib.sha256(f"{source}\x00{id_}".encode()).hexdigest()[:40]


def map_events(items: list[object], door: DoorMapping, tenant: str | None = None) -> Mapped:
    out = Mapped()
    for i, raw in enumerate(items):
        try:
            ce = CloudEvent.model_validate(raw)
        except ValidationError as exc:
            out.refuse(i, "cloudevent: " + reason_for(exc).split(": ", 1)[-1], raw)
            continue
        if ce.type == USAGE_TYPE:
            fields = dict(ce.data or {})
            fields.setdefault("ts", ce.time)
            if tenant is not None:  # a bound key's tenant when data names none
                fields.setdefault("tenant", tenant)
        elif ce.type == LITELLM_TYPE:
            fields = _litellm_tokens(ce, door, tenant)
            out.notes.add(NO_CACHE_NOTE)
        else:
            out.refuse(i, f"unknown_type: {ce.type[:100]!r} (finops.usage or litellm_tokens)",
                       raw)  # fmt: skip
            continue
        fields["event_id"] = event_id(ce.source, ce.id)
        out.add(i, fields)
    return out


def _litellm_tokens(ce: CloudEvent, door: DoorMapping, tenant: str | None) -> dict[str, Any]:
    data = ce.data or {}
    envelope = {"subject": ce.subject, "source": ce.source, "id": ce.id, "data": data}
    lookup = object_lookup(envelope)
    ids = identity(door, lookup, tenant)
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    return {
        "ts": ce.time,
        "tenant": ids["tenant"],
        "route": ids["route"],
        "feature": ids["feature"],
        "node_id": ids["node_id"],
        "request_id": ids["request_id"] or ce.id,
        "attempt": 1,
        "model": data.get("model"),
        "provider": resolve(door.provider, lookup) or door.default.get("provider", "unknown"),
        "input_tokens": prompt,
        "output_tokens": completion,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "batch": False,
        "status": "ok",
    }
