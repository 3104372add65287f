"""OpenTelemetry GenAI spans to usage events. Pure.

A span is a model call when it carries usage: ``gen_ai.usage.input_tokens``
/ ``output_tokens``, or the legacy ``gen_ai.usage.prompt_tokens`` /
``completion_tokens``. Other spans of the export (HTTP, database, the app's
own) are not usage and are skipped, not refused.

By the GenAI semantic conventions the input count includes the cache reads
(``gen_ai.usage.cache_read.input_tokens``) and cache creation
(``gen_ai.usage.cache_creation.input_tokens``), and the output count the
reasoning (``gen_ai.usage.reasoning.output_tokens``); OpenLLMetry's
``cache_read_input_tokens`` / ``cache_creation_input_tokens`` spellings are
read too. Where an instrumentation is known to count otherwise it has an
override (:data:`EXCLUSIVE_INPUT`): OpenLIT writes Anthropic's own
``input_tokens``, which leaves the cache out, so its cache counts are added
back. The provider is ``gen_ai.provider.name``, else the older
``gen_ai.system``, named as the price book names it (:data:`PROVIDERS`).
Identity comes from the mapping file's ``otel`` section; the attempts of a
trace are numbered in start order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from models.contracts import MAX_MS
from models.usage import OPENAI_TIERS
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.mapping import DoorMapping, identity
from pipeline.ingest.otlp import STATUS_ERROR, Span, Value
from pipeline.ingest.outcome import Mapped

INPUT: Final = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT: Final = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ: Final = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE: Final = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING: Final = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
TIER: Final = ("openai.response.service_tier", "gen_ai.openai.response.service_tier")
# Semantic-convention provider names to the price book's (LiteLLM's) names.
PROVIDERS: Final = {
    "aws.bedrock": "bedrock",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure_ai",
    "gcp.gemini": "gemini",
    "gcp.vertex_ai": "vertex_ai",
    "gcp.gen_ai": "vertex_ai",
    "x_ai": "xai",
    "mistral_ai": "mistral",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure_ai",
}
# (scope name prefix, provider): instrumentations whose input count leaves
# the cache out for that provider.
EXCLUSIVE_INPUT: Final = frozenset({("openlit", "anthropic")})


def _count(attrs: dict[str, Value], names: tuple[str, ...]) -> int | None:
    for name in names:
        v = attrs.get(name)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
    return None


def is_call(span: Span) -> bool:
    return _count(span.attributes, INPUT) is not None or _count(span.attributes, OUTPUT) is not None


def provider_of(attrs: dict[str, Value]) -> str:
    raw = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
    name = raw.lower() if isinstance(raw, str) and raw.strip() else "unknown"
    return PROVIDERS.get(name, name)


def _lookup(span: Span) -> Callable[[str], object]:
    def lookup(source: str) -> object:
        if source == "span:trace_id":
            return span.trace_id
        if source == "span:trace_id/span_id":
            return f"{span.trace_id}/{span.span_id}"
        if source.startswith("span:"):
            return span.attributes.get(source[5:])
        if source.startswith("resource:"):
            return span.resource.get(source[9:])
        return None

    return lookup


def fields_of(span: Span, door: DoorMapping, tenant: str | None = None) -> dict[str, Any]:
    a = span.attributes
    provider = provider_of(a)
    read, write = _count(a, CACHE_READ) or 0, _count(a, CACHE_WRITE) or 0
    input_tokens = _count(a, INPUT) or 0
    if any(span.scope.startswith(s) and provider == p for s, p in EXCLUSIVE_INPUT):
        input_tokens += read + write
    output_tokens = _count(a, OUTPUT) or 0
    model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model")
    tier_raw = next((a[t] for t in TIER if isinstance(a.get(t), str)), None)
    tier = OPENAI_TIERS.get(tier_raw) if isinstance(tier_raw, str) else None
    error = a.get("error.type")
    status = "ok"
    if span.status_code == STATUS_ERROR or error is not None:
        status = "timeout" if isinstance(error, str) and "timeout" in error.lower() else "error"
    latency = (span.end_ns - span.start_ns) // 1_000_000
    fields: dict[str, Any] = {
        **identity(door, _lookup(span), tenant),
        "ts": datetime.fromtimestamp(span.start_ns // 1000 / 1e6, UTC) if span.start_ns else None,
        "model": model if isinstance(model, str) else None,
        "provider": provider,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "reasoning_tokens": min(_count(a, REASONING) or 0, output_tokens),
        "batch": False,
        "status": status,
        "latency_ms": latency if 0 <= latency <= MAX_MS else None,
    }
    if tier not in (None, "standard"):
        fields["service_tier"] = tier
    return fields


def map_spans(
    spans: list[Span], door: DoorMapping, attempts: Attempts, tenant: str | None = None
) -> Mapped:
    out = Mapped()
    calls = sorted(
        ((i, s) for i, s in enumerate(spans) if is_call(s)), key=lambda c: (c[1].start_ns, c[0])
    )
    for i, span in calls:
        fields = fields_of(span, door, tenant)
        attempts.assign(fields)
        out.add(i, fields)
    out.skipped = len(spans) - len(calls)
    return out
