"""LiteLLM's ``StandardLoggingPayload`` to usage events. Pure.

What the ``generic_api`` callback posts and what :class:`FinopsLogger`
receives: one payload per call attempt, success or failure. Tokens come
from :func:`models.usage.litellm_payload` (LiteLLM has normalised the
provider's usage already; the cache and reasoning parts are in its usage
object); identity from the mapping file's ``litellm`` section; the attempt
is numbered per ``trace_id`` (:mod:`pipeline.ingest.attempts`). Times are
LiteLLM's epoch seconds. The payload's ``messages`` and ``response`` are
never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from models.contracts import MAX_MS
from models.usage import litellm_payload
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.mapping import DoorMapping, identity, object_lookup
from pipeline.ingest.outcome import Mapped

# LiteLLM's exception classes (litellm.exceptions) by what the attempt was.
TIMEOUTS: Final = frozenset({"Timeout", "APITimeoutError"})
REFUSALS: Final = frozenset({"ContentPolicyViolationError", "RejectedRequestError"})


def _epoch(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _millis(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    ms = round((end - start).total_seconds() * 1000)
    return ms if 0 <= ms <= MAX_MS else None


def status_of(payload: Mapping[str, Any]) -> str:
    if payload.get("status") != "failure":
        return "ok"
    info = payload.get("error_information")
    error_class = info.get("error_class") if isinstance(info, Mapping) else None
    if error_class in TIMEOUTS:
        return "timeout"
    if error_class in REFUSALS:
        return "refused"
    return "error"


def model_of(payload: Mapping[str, Any], provider: object) -> object:
    """The model as the price book names it: LiteLLM's ``openai/gpt-4o``
    without the provider it names apart (``custom_llm_provider``)."""
    model = payload.get("model") or payload.get("model_group")
    if isinstance(model, str) and isinstance(provider, str) and model.startswith(provider + "/"):
        return model[len(provider) + 1 :]
    return model


def fields_of(
    payload: Mapping[str, Any], door: DoorMapping, tenant: str | None = None
) -> dict[str, Any]:
    """The usage-event fields of one payload, attempt not yet numbered."""
    metadata = payload.get("metadata")
    tags = payload.get("request_tags")
    if not isinstance(tags, list) and isinstance(metadata, Mapping):
        tags = metadata.get("tags")
    ids = identity(door, object_lookup(payload, tags), tenant)
    start = _epoch(payload.get("startTime"))
    first_token = _epoch(payload.get("completionStartTime"))
    usage = litellm_payload(payload)
    provider = payload.get("custom_llm_provider") or "unknown"
    fields: dict[str, Any] = {
        **ids,
        "ts": start,
        "model": model_of(payload, provider),
        "provider": provider,
        "status": status_of(payload),
        "latency_ms": _millis(start, _epoch(payload.get("endTime"))),
        "ttft_ms": _millis(start, first_token) if payload.get("stream") else None,
        **usage.fields(),
    }
    if isinstance(payload.get("cache_hit"), bool):
        fields["response_cache_hit"] = payload["cache_hit"]
    return fields


def map_payloads(
    items: list[object], door: DoorMapping, attempts: Attempts, tenant: str | None = None
) -> Mapped:
    out = Mapped()
    built: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            out.refuse(i, "not_object: a LiteLLM payload is a JSON object", item)
            continue
        built.append((i, fields_of(item, door, tenant)))
    # Attempts of one request in the order they started.
    built.sort(key=lambda b: (b[1]["ts"] or datetime.min.replace(tzinfo=UTC), b[0]))
    for i, fields in built:
        attempts.assign(fields)
        out.add(i, fields)
    out.refused.sort(key=lambda r: r.item)
    return out
