"""Wire contracts of the three input topics (README, "Event contract").

These pydantic models are the authority on what is valid. The stream's
column-wise fast path (``pipeline.stream.ndjson``) accepts only rows it can prove
these models accept; everything else is re-checked here, row by row, and
what these models reject is dead-lettered with their error as the reason.

Types are strict: an identifier is a JSON string (not a number), ``5.0`` is
not a token count, ``"yes"`` is not a boolean, and a timestamp is an RFC 3339
string with a zone (:data:`RFC3339`). Every field is bounded: integers by
explicit limits (all within int64), strings by a length and an alphabet
(:data:`FORBIDDEN_CHARS`: an identifier holding one is a ``bad_identifier``).
A line that names a key twice is refused as ambiguous
(:func:`duplicate_keys`). Unknown extra fields are ignored, never stored.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

# The one timestamp form: RFC 3339 with an upper-case T and a zone (Z or
# +-HH:MM), seconds 00-59 (no leap second) and at most six fraction digits.
# A JSON number (epoch seconds), a space for the T, a lower-case z or a
# nanosecond fraction are refused, so the fast path and the contract read
# every timestamp alike. (No look-around: polars' regex engine reads it too.)
RFC3339: Final = (
    r"^(?:[1-9]\d{3}|0[1-9]\d\d|00[1-9]\d|000[1-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
# Characters no identifier or text field may hold: control characters
# (PostgreSQL text cannot hold NUL; the others break logs, files and pages),
# bidirectional overrides, isolates and marks (they make a name read as
# another), zero-width characters and line separators (they hide in a name),
# and lone surrogates (not encodable as UTF-8).
FORBIDDEN_CHARS: Final = (
    "\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff\ud800-\udfff"
)
_FORBIDDEN = re.compile(f"[{FORBIDDEN_CHARS}]")
BAD_IDENTIFIER: Final = "bad_identifier"
MAX_IDENT: Final = 256
MAX_TEXT: Final = 256


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):  # built in Python, not read from the wire
        return value
    if not isinstance(value, str) or not re.fullmatch(RFC3339, value):
        raise ValueError(
            "must be an RFC 3339 date-time string with a zone, YYYY-MM-DDTHH:MM:SS[.ffffff]Z"
            " or +HH:MM"
        )
    return value


def _clean(value: str) -> str:
    found = _FORBIDDEN.search(value)
    if found:
        raise ValueError(
            f"{BAD_IDENTIFIER}: must not contain control, bidirectional-override or surrogate"
            f" characters (U+{ord(found.group()):04X})"
        )
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
# A non-empty identifier: at least one non-whitespace character, bounded so a
# hostile producer cannot make a window key of megabytes.
Ident = Annotated[
    str, Field(min_length=1, max_length=MAX_IDENT, pattern=r"\S"), AfterValidator(_clean)
]
# Free text kept beside the money path (a retry reason, a GPU's model name).
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_clean)]
Tokens = Annotated[StrictInt, Field(ge=0, le=10**12)]
# Bounds of the optional integers: a day in milliseconds, a serving batch.
MAX_MS: Final = 86_400_000
MAX_BATCH_SIZE: Final = 1_000_000
Millis = Annotated[StrictInt, Field(ge=0, le=MAX_MS)]
# DCGM's energy counter counts millijoules since the driver loaded: int64.
MAX_ENERGY_MJ: Final = 2**63 - 1
MAX_POWER_W: Final = 1_000_000
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


DUPLICATE_KEY: Final = "duplicate_key"


class _Pairs(tuple[tuple[str, Any], ...]):
    """A JSON object as its key-value pairs, in order, duplicates kept."""


def duplicate_keys(raw: bytes | str) -> list[str]:
    """The keys a JSON object line names more than once at its top level
    (compared after unescaping, so ``"t\\u0065nant"`` is ``"tenant"``); []
    for a line that is not a JSON object. Such a line is ambiguous: readers
    disagree on which value counts (the first, the last), so a billing system
    refuses it whole (reason ``duplicate_key``)."""
    try:
        top = json.loads(raw, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return []
    if not isinstance(top, _Pairs):
        return []
    counts = Counter(k for k, _ in top)
    return sorted(k for k, n in counts.items() if n > 1)


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


SERVICE_TIERS: Final = ("standard", "priority", "flex", "batch")


class UsageEvent(_Contract):
    """One model-call attempt. Retries of one request share ``request_id``.

    What each count includes (every count is billed tokens, as the provider
    reports them, after :mod:`models.usage` normalised its shape):

    - ``input_tokens``: every prompt token, cache reads and cache writes
      included (OpenAI's and Gemini's prompt count; Anthropic's
      ``input_tokens`` plus its two cache counts).
    - ``cache_read_tokens``: the part of ``input_tokens`` read from a prompt
      cache; ``cache_write_tokens``: the part written to one, every TTL;
      ``cache_write_1h_tokens``: the part of ``cache_write_tokens`` written
      with a one-hour TTL (the rest was written for five minutes).
    - ``output_tokens``: every completion token, thinking included;
      ``reasoning_tokens``: the part of ``output_tokens`` spent thinking,
      billed at the price's reasoning rate if it has one (else as output)
      and always reported apart.

    Checked: cache reads + cache writes <= input; 1h writes <= writes;
    reasoning <= output.

    ``service_tier`` is the tier the provider served the call at; absent, it
    is ``batch`` when ``batch`` is true and ``standard`` otherwise, so events
    written before it existed keep their meaning. When both are given they
    must agree (``batch`` is true exactly for the batch tier). ``region`` is
    where the call ran, for providers that price by region.
    """

    event_id: Ident
    ts: Timestamp
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
    retry_reason: Text | None = None
    fallback_from: Text | None = None
    latency_ms: Millis | None = None
    ttft_ms: Millis | None = None
    local_input_tokens: Tokens | None = None
    batch_size: Annotated[StrictInt, Field(ge=1, le=MAX_BATCH_SIZE)] | None = None
    response_cache_hit: StrictBool | None = None
    cache_write_1h_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    service_tier: Literal["standard", "priority", "flex", "batch"] | None = None
    region: Ident | None = None

    @model_validator(mode="after")
    def _parts_within_wholes(self) -> UsageEvent:
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cache_read_tokens + cache_write_tokens must not exceed input_tokens")
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError("cache_write_1h_tokens must not exceed cache_write_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens must not exceed output_tokens")
        if self.service_tier is not None and self.batch != (self.service_tier == "batch"):
            raise ValueError("batch must be true exactly when service_tier is batch")
        return self


class GpuTelemetrySample(_Contract):
    """A DCGM-like sample; ``energy_mj`` is a monotonic counter in millijoules,
    absent when the GPU does not report one (energy then comes from power)."""

    node_id: Ident
    gpu: Ident
    ts: Timestamp
    power_w: Annotated[float, Field(ge=0, le=MAX_POWER_W, allow_inf_nan=False)]
    energy_mj: Annotated[StrictInt, Field(ge=0, le=MAX_ENERGY_MJ)] | None = None
    model: Text | None = None


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
    ts: Timestamp
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
