import json

import pytest
from pydantic import ValidationError

from models.contracts import CacheEvent, GpuTelemetrySample, UsageEvent
from pipeline.cache.codec import CACHE
from pipeline.stream.message import Message
from tests.factories import cache_event, event


def test_valid_event_parses_and_normalises_nothing() -> None:
    e = UsageEvent.model_validate(event(retry_reason="timeout", unknown_field={"x": 1}))
    assert e.input_tokens == 4000 and e.retry_reason == "timeout"
    assert not hasattr(e, "unknown_field")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"input_tokens": -1}, "greater than or equal"),
        ({"output_tokens": 1.5}, "valid integer"),
        ({"attempt": 0}, "greater than or equal to 1"),
        ({"tenant": ""}, "at least 1 character"),
        ({"tenant": "   "}, "pattern"),
        ({"route": 5}, "valid string"),
        ({"batch": "yes"}, "valid boolean"),
        ({"status": "great"}, "'ok'"),
        ({"ts": "2025-11-01T10:00:00"}, "with a zone"),
        ({"ts": "yesterday"}, "RFC 3339"),
        ({"ts": "2025-11-01T10:00:60Z"}, "RFC 3339"),  # no leap second
        ({"ts": 1761991200}, "RFC 3339"),  # no epoch number
        ({"ts": "2025-11-01 10:00:00Z"}, "RFC 3339"),
        ({"latency_ms": 2**63}, "less than or equal"),
        ({"batch_size": 10**7}, "less than or equal"),
        ({"retry_reason": "x" * 257}, "at most 256"),
        ({"cache_read_tokens": 3000, "cache_write_tokens": 1001}, "must not exceed input_tokens"),
        ({"prompt": "tell me a secret"}, "prompt/completion text"),
        ({"node_id": "a\x00b"}, "bad_identifier.*U\\+0000"),
        ({"tenant": "acme\u202e"}, "bad_identifier.*U\\+202E"),
        ({"route": "/v1/\x1b[31m"}, "bad_identifier.*U\\+001B"),
        ({"retry_reason": "x\u2066"}, "bad_identifier"),
    ],
)
def test_each_rule_rejects(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        UsageEvent.model_validate(event(**change))


def test_missing_required_field_rejected() -> None:
    ev = event()
    del ev["request_id"]
    with pytest.raises(ValidationError, match="request_id"):
        UsageEvent.model_validate(ev)


def test_telemetry_and_cache_contracts() -> None:
    GpuTelemetrySample.model_validate(
        {
            "node_id": "n",
            "gpu": "0",
            "ts": "2025-11-01T00:00:00Z",
            "power_w": 350.5,
            "energy_mj": 123456789,
        }
    )
    with pytest.raises(ValidationError):
        GpuTelemetrySample.model_validate(
            {
                "node_id": "n",
                "gpu": "0",
                "ts": "2025-11-01T00:00:00Z",
                "power_w": float("nan"),
                "energy_mj": 1,
            }
        )
    hit = {
        "node_id": "n",
        "ts": "2025-11-01T00:00:00Z",
        "tenant": "a",
        "route": "r",
        "layer": "prefix",
        "op": "hit",
        "tokens": 10,
    }
    CacheEvent.model_validate(hit)
    with pytest.raises(ValidationError, match="owner_tenant"):
        CacheEvent.model_validate({**hit, "op": "evict"})


@pytest.mark.parametrize("count", [0, -1, "3", 1.5, None, 10**9 + 1, True])
def test_a_cache_counter_counts_at_least_one_whole_operation(count: object) -> None:
    line = json.dumps({**cache_event(op="hit"), "count": count})
    with pytest.raises(ValidationError, match="count"):
        CacheEvent.model_validate_json(line)
    # ... and the stream's fast path agrees: the line is dead-lettered.
    decoded = CACHE.decode([Message(0, 0, line.encode())])
    assert decoded.events.height == 0 and len(decoded.dead) == 1


def test_a_cache_event_without_a_count_is_one_operation() -> None:
    assert CacheEvent.model_validate(cache_event(op="hit")).count == 1
    assert CacheEvent.model_validate({**cache_event(op="hit"), "count": 10**9}).count == 10**9
    decoded = CACHE.decode([Message(0, 0, json.dumps(cache_event(op="hit")).encode())])
    assert decoded.events["count"].to_list() == [1]
