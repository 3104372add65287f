"""Usage normalizers: each provider's usage object, as its API returns it,
mapped to the usage contract's token counts (:class:`models.contracts.UsageEvent`).
Pure: dicts in, :class:`Usage` out.

Providers disagree on what "input tokens" means, and that is where cost
bugs cluster. The contract's ``input_tokens`` counts every prompt token,
cache reads and writes included, and ``output_tokens`` every completion
token, thinking included. So:

- OpenAI (Chat Completions and Responses), DeepSeek, vLLM and LiteLLM report
  an input total that already contains the cached part: taken as is.
- Anthropic Messages and Bedrock Converse report ``input_tokens`` /
  ``inputTokens`` as the *uncached remainder*, beside the cache counts:
  the cache reads and writes are added back.
- Gemini's ``promptTokenCount`` contains ``cachedContentTokenCount`` but not
  ``toolUsePromptTokenCount`` (tool results fed back are billed as input),
  and ``thoughtsTokenCount`` is billed as output but is not part of
  ``candidatesTokenCount`` (unless the total shows it already is).

A count that is missing, null or not an integer is 0 (every provider leaves
out the details it has nothing for). A part is never larger than its whole:
thinking and 1-hour writes are clamped to their totals, as LiteLLM does; a
cache larger than the prompt is left for the contract to refuse, because it
means the shape was misread. A service tier the contract has no name for
(OpenAI ``scale``, Bedrock ``reserved``, provisioned throughput) is None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final


@dataclass(frozen=True)
class Usage:
    """The contract's token fields of one call (what each includes is said
    on :class:`models.contracts.UsageEvent`)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    service_tier: str | None = None

    def fields(self, *, batch: bool = False) -> dict[str, Any]:
        """As usage-event fields, ``batch`` and ``service_tier`` agreeing: a
        call the producer sent through a batch API (``batch``) is the batch
        tier whatever the usage says (OpenAI's batch results say
        ``default``), and a standard tier is left out (it is what no tier
        means)."""
        out = asdict(self)
        tier = "batch" if batch else self.service_tier
        out["batch"] = tier == "batch"
        del out["service_tier"]
        if tier not in (None, "standard"):
            out["service_tier"] = tier
        return out


def _n(value: object) -> int:
    """A count: a JSON integer at or above 0, else 0 (booleans are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


def _d(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _l(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _tier(names: Mapping[str, str], raw: object) -> str | None:
    return names.get(raw) if isinstance(raw, str) else None


def _usage(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    reasoning: int = 0,
    tier: str | None = None,
) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=min(cache_write_1h, cache_write),
        reasoning_tokens=min(reasoning, output_tokens),
        service_tier=tier,
    )


# OpenAI: "default" is the standard tier; a call asked for at "fast" is shown
# as "priority"; "auto" is a request preference, never a served tier.
OPENAI_TIERS: Final = {"default": "standard", "priority": "priority", "flex": "flex"}
ANTHROPIC_TIERS: Final = {"standard": "standard", "priority": "priority", "batch": "batch"}
GEMINI_TRAFFIC: Final = {
    "ON_DEMAND": "standard",
    "ON_DEMAND_PRIORITY": "priority",
    "ON_DEMAND_FLEX": "flex",
    "FLEX": "flex",
    "BATCH": "batch",
}
GEMINI_HEADER: Final = {"standard": "standard", "priority": "priority", "flex": "flex"}
BEDROCK_TIERS: Final = {"default": "standard", "priority": "priority", "flex": "flex"}


def openai_chat(usage: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """A Chat Completions ``usage`` (``CompletionUsage``); the served tier is
    the response's ``service_tier``, beside the usage."""
    prompt, completion = (
        _d(usage.get("prompt_tokens_details")),
        _d(usage.get("completion_tokens_details")),
    )
    return _usage(
        input_tokens=_n(usage.get("prompt_tokens")),
        output_tokens=_n(usage.get("completion_tokens")),
        cache_read=_n(prompt.get("cached_tokens")),
        cache_write=_n(prompt.get("cache_write_tokens")),
        reasoning=_n(completion.get("reasoning_tokens")),
        tier=_tier(OPENAI_TIERS, _d(response).get("service_tier")),
    )


def openai_responses(usage: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """A Responses API ``usage`` (``ResponseUsage``). Its cache-write TTL
    classes (30 minutes, 12 hours) are not the 1-hour class: no 1h writes."""
    details, out = _d(usage.get("input_tokens_details")), _d(usage.get("output_tokens_details"))
    return _usage(
        input_tokens=_n(usage.get("input_tokens")),
        output_tokens=_n(usage.get("output_tokens")),
        cache_read=_n(details.get("cached_tokens")),
        cache_write=_n(details.get("cache_write_tokens")),
        reasoning=_n(out.get("reasoning_tokens")),
        tier=_tier(OPENAI_TIERS, _d(response).get("service_tier")),
    )


def anthropic_messages(
    usage: Mapping[str, Any], response: Mapping[str, Any] | None = None
) -> Usage:
    """A Messages API ``usage``: ``input_tokens`` excludes the cache reads and
    writes; ``cache_creation`` splits the writes by TTL (absent: all 5m)."""
    read = _n(usage.get("cache_read_input_tokens"))
    creation = _d(usage.get("cache_creation"))
    one_hour = _n(creation.get("ephemeral_1h_input_tokens"))
    write = _n(usage.get("cache_creation_input_tokens")) or (
        _n(creation.get("ephemeral_5m_input_tokens")) + one_hour
    )
    return _usage(
        input_tokens=_n(usage.get("input_tokens")) + read + write,
        output_tokens=_n(usage.get("output_tokens")),
        cache_read=read,
        cache_write=write,
        cache_write_1h=one_hour,
        reasoning=_n(_d(usage.get("output_tokens_details")).get("thinking_tokens")),
        tier=_tier(ANTHROPIC_TIERS, usage.get("service_tier")),
    )


def _search_grounded(response: Mapping[str, Any]) -> bool:
    """Whether Google Search or Maps grounded the answer: Google bills those
    per query and leaves their retrieved tokens out of the input."""
    for candidate in _l(response.get("candidates")):
        grounding = _d(_d(candidate).get("groundingMetadata"))
        if grounding.get("webSearchQueries"):
            return True
        if any("maps" in _d(c) for c in _l(grounding.get("groundingChunks"))):
            return True
    return False


def gemini(usage: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """A ``generateContent`` ``usageMetadata``. The tier is Vertex's
    ``trafficType``, else the Gemini API's ``x-gemini-service-tier`` header
    (given as ``response["headers"]``)."""
    response = _d(response)
    prompt = _n(usage.get("promptTokenCount"))
    tool_use = _n(usage.get("toolUsePromptTokenCount"))
    candidates = _n(usage.get("candidatesTokenCount"))
    thoughts = _n(usage.get("thoughtsTokenCount"))
    total = usage.get("totalTokenCount")
    # Some models count the thoughts inside the candidates: the total says so.
    inclusive = thoughts > 0 and _n(total) == prompt + candidates + tool_use
    tier = _tier(GEMINI_TRAFFIC, usage.get("trafficType")) or _tier(
        GEMINI_HEADER, _d(response.get("headers")).get("x-gemini-service-tier")
    )
    return _usage(
        input_tokens=prompt + (0 if _search_grounded(response) else tool_use),
        output_tokens=candidates if inclusive else candidates + thoughts,
        cache_read=min(_n(usage.get("cachedContentTokenCount")), prompt),
        reasoning=thoughts,
        tier=tier,
    )


def deepseek(usage: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """DeepSeek's ``usage``: ``prompt_tokens`` = cache hits + misses; a miss is
    billed as plain input, never as a cache write."""
    hit = usage.get("prompt_cache_hit_tokens")
    prompt = (
        _n(usage.get("prompt_tokens"))
        if "prompt_tokens" in usage
        else _n(hit) + _n(usage.get("prompt_cache_miss_tokens"))
    )
    read = (
        _n(hit)
        if isinstance(hit, int)
        else _n(_d(usage.get("prompt_tokens_details")).get("cached_tokens"))
    )
    return _usage(
        input_tokens=prompt,
        output_tokens=_n(usage.get("completion_tokens")),
        cache_read=min(read, prompt),
        reasoning=_n(_d(usage.get("completion_tokens_details")).get("reasoning_tokens")),
    )


def bedrock_converse(usage: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """A Converse ``usage`` (``TokenUsage``): ``inputTokens`` excludes the cache
    reads and writes; ``cacheDetails`` splits the writes by TTL. Thinking is
    reported only under ``additionalModelResponseFields``, when asked for."""
    response = _d(response)
    read = _n(usage.get("cacheReadInputTokens"))
    write = _n(usage.get("cacheWriteInputTokens"))
    one_hour = sum(
        _n(_d(x).get("inputTokens"))
        for x in _l(usage.get("cacheDetails"))
        if _d(x).get("ttl") == "1h"
    )
    extra = _d(_d(response.get("additionalModelResponseFields")).get("usage"))
    return _usage(
        input_tokens=_n(usage.get("inputTokens")) + read + write,
        output_tokens=_n(usage.get("outputTokens")),
        cache_read=read,
        cache_write=write,
        cache_write_1h=one_hour,
        reasoning=_n(_d(extra.get("output_tokens_details")).get("thinking_tokens")),
        tier=_tier(BEDROCK_TIERS, _d(response.get("serviceTier")).get("type")),
    )


def vllm_openai(usage: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """vLLM's OpenAI-compatible ``usage`` (``UsageInfo``): the Chat Completions
    shape; cached tokens only with ``--enable-prompt-tokens-details``; no tiers."""
    return replace(openai_chat(usage), service_tier=None)


LITELLM_COST_TIERS: Final = {"priority": "priority", "fast": "priority", "flex": "flex"}
_ANY_TIER: Final = {**OPENAI_TIERS, **ANTHROPIC_TIERS}


def litellm_payload(payload: Mapping[str, Any], response: Mapping[str, Any] | None = None) -> Usage:
    """LiteLLM's ``StandardLoggingPayload``: its ``prompt_tokens`` and
    ``completion_tokens`` are already whole (LiteLLM normalised the
    provider); the cache and reasoning parts are in
    ``metadata.usage_object``, the tier in ``cost_breakdown``."""
    usage = _d(_d(payload.get("metadata")).get("usage_object")) or _d(
        _d(payload.get("hidden_params")).get("usage_object")
    )
    prompt, completion = (
        _d(usage.get("prompt_tokens_details")),
        _d(usage.get("completion_tokens_details")),
    )
    read = prompt.get("cached_tokens")
    if not isinstance(read, int):
        read = usage.get("cache_read_input_tokens")
    write = next(
        (
            v
            for v in (
                prompt.get("cache_write_tokens"),
                prompt.get("cache_creation_tokens"),
                usage.get("cache_creation_input_tokens"),
            )
            if isinstance(v, int)
        ),
        0,
    )
    tier = _tier(LITELLM_COST_TIERS, _d(payload.get("cost_breakdown")).get("service_tier"))
    return _usage(
        input_tokens=_n(payload.get("prompt_tokens")),
        output_tokens=_n(payload.get("completion_tokens")),
        cache_read=_n(read),
        cache_write=_n(write),
        cache_write_1h=_n(
            _d(prompt.get("cache_creation_token_details")).get("ephemeral_1h_input_tokens")
        ),
        reasoning=_n(completion.get("reasoning_tokens")),
        tier=tier or _tier(_ANY_TIER, usage.get("service_tier")),
    )


Normalizer = Callable[[Mapping[str, Any], Mapping[str, Any] | None], Usage]
SHAPES: Final[dict[str, Normalizer]] = {
    "openai_chat": openai_chat,
    "openai_responses": openai_responses,
    "anthropic_messages": anthropic_messages,
    "gemini": gemini,
    "deepseek": deepseek,
    "bedrock_converse": bedrock_converse,
    "vllm_openai": vllm_openai,
    "litellm_standard_logging_payload": litellm_payload,
}
