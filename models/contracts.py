"""Wire contracts of the three input topics (README, "Event contract").

These pydantic models are the authority on what is valid. The stream's
column-wise fast path (``pipeline.stream.ndjson``) accepts only rows it can prove
these models accept; everything else is re-checked here, row by row, and
what these models reject is dead-lettered with their error as the reason.

Types are strict: an identifier is a JSON string (not a number), ``5.0`` is
not a token count, ``"yes"`` is not a boolean, and a timestamp without a zone
is rejected. Unknown extra fields are ignored, never stored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; such an id would fail the sink forever.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A non-empty identifier: at least one non-whitespace character, bounded so a
# hostile producer cannot make a window key of megabytes.
Ident = Annotated[str, Field(min_length=1, max_length=256, pattern=r"\S"), AfterValidator(_no_nul)]
Tokens = Annotated[StrictInt, Field(ge=0, le=10**12)]
# Operations one cache-event line stands for (a cache node's counter).
MAX_COUNT: Final = 10**9
Count = Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)]

# Keys that would carry prompt or completion text. No such text is ever
# accepted, so an event that has one is rejected as a whole.
TEXT_FIELDS: Final = frozenset(
    {
        "prompt",
        "prompts",
        "completion",
        "completions",
        "messages",
        "content",
        "text",
        "input_text",
        "output_text",
        "response_text",
        "system_prompt",
    }
)


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    INVALID_OUTPUT = "invalid_output"


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = sorted(TEXT_FIELDS.intersection(data))
            if found:
                raise ValueError(f"prompt/completion text is never accepted (fields: {found})")
        return data


class UsageEvent(_Contract):
    """One model-call attempt. Retries of one request share ``request_id``."""

    event_id: Ident
    ts: AwareDatetime
    tenant: Ident
    route: Ident
    feature: Ident
    model: Ident
    provider: Ident
    node_id: Ident
    request_id: Ident
    attempt: Annotated[StrictInt, Field(ge=1, le=10_000)]
    input_tokens: Tokens
    output_tokens: Tokens
    cache_read_tokens: Tokens
    cache_write_tokens: Tokens
    batch: StrictBool
    status: Status
    retry_reason: str | None = Field(default=None, max_length=256)
    fallback_from: str | None = Field(default=None, max_length=256)
    latency_ms: Annotated[StrictInt, Field(ge=0)] | None = None
    ttft_ms: Annotated[StrictInt, Field(ge=0)] | None = None
    local_input_tokens: Tokens | None = None
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = None
    response_cache_hit: StrictBool | None = None

    @model_validator(mode="after")
    def _cache_within_input(self) -> UsageEvent:
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cache_read_tokens + cache_write_tokens must not exceed input_tokens")
        return self


class GpuTelemetrySample(_Contract):
    """A DCGM-like sample; ``energy_mj`` is a monotonic counter in millijoules,
    absent when the GPU does not report one (energy then comes from power)."""

    node_id: Ident
    gpu: Ident
    ts: AwareDatetime
    power_w: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    energy_mj: Annotated[StrictInt, Field(ge=0)] | None = None
    model: str | None = None


class CacheEvent(_Contract):
    """One lookup, insert or eviction in a cache layer, or ``count`` of them.

    ``model``/``provider`` name the model the cache sits in front of, so a
    hit can be valued with the price book; ``output_tokens`` is, for the
    response and semantic layers, the length of the cached answer (a hit
    there saves the whole call, not only the prompt).

    ``count`` (default 1) lets a cache node send counters instead of one
    line per operation: a line with ``count`` n stands for n operations with
    the same node, minute, tenant, route, layer, op, model, provider and
    owner, and ``tokens`` and ``output_tokens`` are their sums. Windows are
    1-minute sums, so a counter line and the n lines it stands for give the
    same windows, to the token."""

    node_id: Ident
    ts: AwareDatetime
    tenant: Ident
    route: Ident
    layer: Literal["prefix", "embedding", "response", "semantic"]
    op: Literal["hit", "miss", "insert", "evict"]
    tokens: Tokens
    owner_tenant: Ident | None = None
    model: Ident | None = None
    provider: Ident | None = None
    output_tokens: Tokens = 0
    count: Count = 1

    @model_validator(mode="after")
    def _evict_has_owner(self) -> CacheEvent:
        if self.op == "evict" and self.owner_tenant is None:
            raise ValueError("an evict event must name owner_tenant")
        return self
