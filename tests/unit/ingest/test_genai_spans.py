from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.ingest import mapping
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.genai_spans import map_spans
from pipeline.ingest.otlp import BadTraces, Span, decode

DOOR = mapping.load().otel
T0 = 1_762_000_000_000_000_000


def span(n: int, scope: str = "opentelemetry.instrumentation.anthropic", **attrs: Any) -> Span:
    base = {"tenant.id": "acme", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-4.5-sonnet"}  # fmt: skip
    return Span("ab" * 16, f"{n:016x}", "chat", T0 + n * 10**9, T0 + n * 10**9 + 5 * 10**8, 0,
                {**base, **attrs}, {"host.name": "app-1"}, scope)  # fmt: skip


def events(spans: list[Span]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in map_spans(spans, DOOR, Attempts()).lines]


def test_semantic_convention_counts_include_the_cache() -> None:
    (e,) = events([span(1, **{"gen_ai.usage.input_tokens": 1210, "gen_ai.usage.output_tokens": 9,
                               "gen_ai.usage.cache_read.input_tokens": 1000,
                               "gen_ai.usage.cache_creation.input_tokens": 200})])  # fmt: skip
    assert (e["input_tokens"], e["cache_read_tokens"], e["cache_write_tokens"]) == (1210, 1000, 200)
    assert (e["node_id"], e["latency_ms"], e["tenant"]) == ("app-1", 500, "acme")


def test_openlit_anthropic_input_excludes_the_cache_and_is_added_back() -> None:
    attrs = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 9,
             "gen_ai.usage.cache_read.input_tokens": 1000,
             "gen_ai.usage.cache_creation.input_tokens": 200}  # fmt: skip
    (e,) = events([span(1, scope="openlit.instrumentation.anthropic", **attrs)])
    assert e["input_tokens"] == 1210
    (o,) = events([span(1, scope="openlit.instrumentation.openai",
                        **{**attrs, "gen_ai.provider.name": "openai",
                           "gen_ai.usage.input_tokens": 1300})])  # fmt: skip
    assert o["input_tokens"] == 1300  # OpenAI's prompt count already holds it


def test_legacy_names_and_providers_and_spans_without_usage() -> None:
    old_names = {
        "gen_ai.system": "aws.bedrock",
        "gen_ai.provider.name": None,
        "gen_ai.usage.prompt_tokens": 70,
        "gen_ai.usage.completion_tokens": 7,
    }
    legacy = span(2, **old_names)
    other = span(1)  # an agent or HTTP span: not usage
    out = map_spans([other, legacy], DOOR, Attempts())
    assert out.skipped == 1 and not out.refused
    (e,) = [json.loads(line) for line in out.lines]
    assert (e["provider"], e["input_tokens"], e["output_tokens"]) == ("bedrock", 70, 7)


def test_a_traces_calls_are_numbered_in_start_order() -> None:
    usage = {"gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 1}
    got = events([span(3, **usage), span(1, **usage), span(2, **usage)])
    assert [e["attempt"] for e in got] == [1, 2, 3]
    assert [e["event_id"][-1] for e in got] == ["1", "2", "3"]


def test_otlp_json_has_hex_ids_and_string_integers() -> None:
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "h"}}]},
        "scopeSpans": [{"scope": {"name": "openlit.x"}, "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
            "name": "chat", "startTimeUnixNano": "1762000000000000000",
            "endTimeUnixNano": 1762000000500000000, "status": {"code": 2},
            "attributes": [
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
                {"key": "f", "value": {"doubleValue": 0.5}},
                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
            ]}]}]}]}  # fmt: skip
    (s,) = decode(json.dumps(body).encode(), protobuf=False)
    assert (s.trace_id, s.span_id) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    assert (s.start_ns, s.status_code, s.scope) == (1762000000000000000, 2, "openlit.x")
    assert s.attributes == {"gen_ai.usage.input_tokens": 42, "f": 0.5, "tags": ["a"]}
    assert s.resource == {"host.name": "h"}


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"resourceSpans": {}}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}',
        b"\xff",
    ],
)
def test_malformed_otlp_json_is_refused(body: bytes) -> None:
    with pytest.raises(BadTraces):
        decode(body, protobuf=False)


def test_malformed_protobuf_is_refused() -> None:
    with pytest.raises(BadTraces):
        decode(b"\x0a\xff\xff\xff\xff\x0f", protobuf=True)
