from __future__ import annotations

import json
from typing import Any

from pipeline.ingest import mapping
from pipeline.ingest.cloudevents import event_id, map_events
from tests.factories import event

DOOR = mapping.load().openmeter


def usage_event(i: int, **data: Any) -> dict[str, Any]:
    body = {k: v for k, v in event(**data).items() if k not in ("event_id", "ts")}
    return {"specversion": "1.0", "id": f"e{i}", "source": "gw", "type": "finops.usage",
            "time": "2025-11-01T10:00:00Z", "data": body}  # fmt: skip


def test_the_event_id_is_the_cloudevents_dedup_key() -> None:
    out = map_events([usage_event(1), usage_event(1, input_tokens=9999)], DOOR)
    ids = {json.loads(line)["event_id"] for line in out.lines}
    assert ids == {event_id("gw", "e1")}  # one id: the pipeline counts it once
    assert event_id("gw", "e1") != event_id("gw2", "e1") != event_id("gw", "e2")
    assert json.loads(out.lines[0])["ts"] == "2025-11-01T10:00:00Z"  # from time


def test_litellm_tokens_are_mapped_and_said_to_lack_cache_counts() -> None:
    om = {"specversion": "1.0", "type": "litellm_tokens", "id": "chatcmpl-1",
          "time": "2025-11-01T10:00:00+00:00", "source": "litellm-proxy", "subject": "bob",
          "data": {"model": "gpt-4o", "prompt_tokens": 30, "completion_tokens": 4}}  # fmt: skip
    out = map_events([om], DOOR)
    got = json.loads(out.lines[0])
    assert (got["tenant"], got["provider"], got["input_tokens"], got["cache_read_tokens"]) == (
        "bob",
        "openai",
        30,
        0,
    )
    assert any("no cache counts" in n for n in out.notes)


def test_bad_envelopes_and_unknown_types_are_refused_with_their_envelope_only() -> None:
    items: list[object] = [
        {"specversion": "0.3", "id": "a", "source": "s", "type": "finops.usage"},
        {"id": "a", "source": "s", "type": "finops.usage"},
        {"specversion": "1.0", "id": "b", "source": "s", "type": "com.example.other",
         "data": {"messages": "secret prompt"}},
        [],
    ]  # fmt: skip
    out = map_events(items, DOOR)
    assert not out.lines
    reasons = [r.reason.split(":")[0] for r in out.refused]
    assert reasons == ["cloudevent", "cloudevent", "unknown_type", "cloudevent"]
    assert all(b"secret prompt" not in r.evidence for r in out.refused)


def test_a_refused_usage_event_keeps_only_contract_fields_and_its_tenant() -> None:
    ce = usage_event(7, tenant="victim", input_tokens=-1)
    ce["data"].update({"input": "MY SECRET PROMPT", "user_message": "hello doctor"})
    out = map_events([ce], DOOR, "attacker")
    (refused,) = out.refused
    assert b"SECRET" not in refused.evidence and b"doctor" not in refused.evidence
    assert refused.tenant == "victim" and out.named_tenants() == {"victim"}


def test_a_bound_keys_tenant_fills_a_usage_event_that_names_none() -> None:
    ce = usage_event(8)
    del ce["data"]["tenant"]
    out = map_events([ce], DOOR, "acme")
    assert json.loads(out.lines[0])["tenant"] == "acme"
