from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path
from typing import Any

from pipeline.ingest import mapping
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.litellm_payload import map_payloads, status_of

DATA = Path(__file__).parents[2] / "data" / "ingest" / "litellm_payloads.json"
DOOR = mapping.load().litellm


def payloads() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(DATA.read_text())
    return items


def test_the_proxys_payloads_map_to_events_of_our_contract() -> None:
    out = map_payloads(payloads(), DOOR, Attempts())  # type: ignore[arg-type]
    assert not out.refused
    events = [json.loads(line) for line in out.lines]
    cached = events[0]
    assert (cached["tenant"], cached["route"], cached["feature"]) == ("team-a", "chat", "extract")
    assert (cached["model"], cached["provider"]) == ("gpt-4o", "openai")  # prefix dropped
    assert (cached["input_tokens"], cached["cache_read_tokens"]) == (1200, 1000)
    assert cached["reasoning_tokens"] == 5
    write = events[1]
    assert (write["cache_read_tokens"], write["cache_write_tokens"]) == (500, 1500)
    assert write["input_tokens"] == 2100  # LiteLLM's prompt count already holds the cache
    # The fallback: a failure, then the success, one request, two attempts.
    fallback = [e for e in events if e["route"] == "fallback"]
    assert [(e["status"], e["attempt"]) for e in fallback] == [("error", 1), ("ok", 2)]
    assert len({e["request_id"] for e in fallback}) == 1
    assert len({e["event_id"] for e in fallback}) == 2  # LiteLLM gave both one call id
    # No text of the payload reached an event.
    assert not any("never-stored" in line.decode() for line in out.lines)


def test_a_resent_body_keeps_its_ids_and_attempts() -> None:
    attempts = Attempts()
    first = map_payloads(payloads(), DOOR, attempts)  # type: ignore[arg-type]
    again = map_payloads(list(reversed(payloads())), DOOR, attempts)  # type: ignore[arg-type]
    assert sorted(first.lines) == sorted(again.lines)


def test_what_cannot_be_mapped_is_refused_with_what_was_read_and_no_text() -> None:
    broken = deepcopy(payloads()[0])
    broken["prompt_tokens"] = 10  # fewer than its 1000 cached tokens
    out = map_payloads([broken, "not an object"], DOOR, Attempts())
    assert [r.item for r in out.refused] == [0, 1]
    assert out.refused[0].reason.startswith("schema:")
    assert b"never-stored" not in out.refused[0].evidence
    assert b"team-a" in out.refused[0].evidence
    assert out.refused[1].reason.startswith("not_object")


def test_failures_are_told_apart_by_their_error_class() -> None:
    def failed(error_class: str) -> dict[str, Any]:
        return {"status": "failure", "error_information": {"error_class": error_class}}

    assert status_of({"status": "success"}) == "ok"
    assert status_of(failed("Timeout")) == "timeout"
    assert status_of(failed("ContentPolicyViolationError")) == "refused"
    assert status_of(failed("RateLimitError")) == "error"
