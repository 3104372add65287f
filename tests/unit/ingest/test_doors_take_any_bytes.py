"""No body stops a door: whatever bytes arrive, each door either maps them
(accepted lines our contract takes, refused items with a reason) or says
the body is not its format; nothing else escapes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.contracts import UsageEvent
from pipeline.ingest import mapping
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.outcome import Mapped
from pipeline.ingest.server import BadBody, doors

DOORS = doors(mapping.load(), Attempts())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
# Values placed where each format reads them, so the mappers get past the envelope.
KEYS = [
    "model",
    "status",
    "startTime",
    "prompt_tokens",
    "completion_tokens",
    "metadata",
    "request_tags",
    "trace_id",
    "litellm_call_id",
    "custom_llm_provider",
    "specversion",
    "id",
    "source",
    "type",
    "data",
    "time",
    "resourceSpans",
    "scopeSpans",
    "spans",
    "traceId",
    "spanId",
    "attributes",
    "key",
    "value",
    "intValue",
    "event_id",
    "tenant",
]
shaped = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)


def judged(door: str, body: bytes, content_type: str) -> None:
    try:
        out = DOORS[door].map(body, content_type, None)
    except BadBody:
        return
    assert isinstance(out, Mapped)
    assert len(out.lines) == len(out.tenants)
    for line in out.lines:  # every accepted line is one the contract accepts
        UsageEvent.model_validate_json(line)
    assert all(r.reason for r in out.refused)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(sorted(DOORS)))
def test_arbitrary_bytes(body: bytes, door: str) -> None:
    for content_type in sorted(DOORS[door].content_types):
        judged(door, body, content_type)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(shaped, max_size=3) | shaped, st.sampled_from(sorted(DOORS)))
def test_json_in_the_formats_shapes(value: Any, door: str) -> None:
    body = json.dumps(value).encode()
    for content_type in sorted(DOORS[door].content_types):
        judged(door, body, content_type)


def test_bodies_that_once_escaped_are_refused_or_bounded() -> None:
    import pytest

    from pipeline.ingest.server import TooMany

    deep = b"{}\n" + b"[" * 100_000
    for door in ("litellm", "events"):
        with pytest.raises(BadBody):
            DOORS[door].map(deep, "application/json", None)
    huge = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "ab" * 16, "spanId": "cd" * 8,
        "attributes": [{"key": "x", "value": {"doubleValue": 10**400}}]}]}]}]})  # fmt: skip
    assert DOORS["traces"].map(huge.encode(), "application/json", None).skipped == 1
    many = b"[" + b",".join([b"{}"] * 10_001) + b"]"
    for door in ("litellm", "events"):
        with pytest.raises(TooMany):
            DOORS[door].map(many, "application/json", None)
    with pytest.raises(TooMany):
        DOORS["usage"].map(b"{}\n" * 10_001, "application/x-ndjson", None)
