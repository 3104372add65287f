"""The usage contract's column-wise twin: decode a batch of usage messages
into one validated polars frame (see ``pipeline.stream.ndjson``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from models.contracts import MAX_BATCH_SIZE, MAX_MS, SERVICE_TIERS, UsageEvent
from pipeline.stream.message import Message
from pipeline.stream.ndjson import (
    ColumnContract,
    Decoded,
    ident,
    integer,
    text,
    timestamp,
    tokens,
)

IDENT_FIELDS: Final = (
    "event_id",
    "tenant",
    "route",
    "feature",
    "model",
    "provider",
    "node_id",
    "request_id",
)
TOKEN_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
OPTIONAL_TEXT: Final = ("retry_reason", "fallback_from")
# Fields added after the first contract, with the values that mean what
# their absence means: an event's fingerprint leaves such a field out, so
# an event sent before the field existed is still a duplicate of its
# re-send. (The contract makes ``batch`` agree with ``service_tier``, so an
# explicit standard or batch tier says nothing ``batch`` does not.)
ADDED: Final[dict[str, tuple[object, ...]]] = {
    "cache_write_1h_tokens": (0,),
    "reasoning_tokens": (0,),
    "service_tier": (None, "standard", "batch"),
    "region": (None,),
}
SCHEMA: Final[dict[str, pl.DataType]] = {
    **{f: pl.String() for f in IDENT_FIELDS},
    "ts": pl.String(),
    "attempt": pl.Int64(),
    **{f: pl.Int64() for f in TOKEN_FIELDS},
    "batch": pl.Boolean(),
    "status": pl.String(),
    "retry_reason": pl.String(),
    "fallback_from": pl.String(),
    "latency_ms": pl.Int64(),
    "ttft_ms": pl.Int64(),
    "local_input_tokens": pl.Int64(),
    "batch_size": pl.Int64(),
    "response_cache_hit": pl.Boolean(),
    "cache_write_1h_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "service_tier": pl.String(),
    "region": pl.String(),
}
_STATUSES: Final = ["ok", "error", "timeout", "refused", "invalid_output"]


def _checks() -> list[pl.Expr]:
    """Column-wise twins of the contract's rules; a row failing any goes to pydantic."""
    optional = [
        text("retry_reason"),
        text("fallback_from"),
        integer("latency_ms", 0, MAX_MS, required=False),
        integer("ttft_ms", 0, MAX_MS, required=False),
        tokens("local_input_tokens", required=False),
        integer("batch_size", 1, MAX_BATCH_SIZE, required=False),
        tokens("cache_write_1h_tokens", required=False),
        tokens("reasoning_tokens", required=False),
        ident("region", required=False),
        pl.col("service_tier").is_null() | pl.col("service_tier").is_in(SERVICE_TIERS),
    ]
    # Absent counts are 0 (the defaults fill them after the checks).
    write_1h = pl.col("cache_write_1h_tokens").fill_null(0)
    reasoning = pl.col("reasoning_tokens").fill_null(0)
    tier = pl.col("service_tier")
    return [
        *(ident(f) for f in IDENT_FIELDS),
        *(tokens(f) for f in TOKEN_FIELDS),
        *optional,
        timestamp(),
        integer("attempt", 1, 10_000),
        pl.col("batch").is_not_null(),
        pl.col("status").is_not_null() & pl.col("status").is_in(_STATUSES),
        (pl.col("cache_read_tokens") + pl.col("cache_write_tokens")) <= pl.col("input_tokens"),
        write_1h <= pl.col("cache_write_tokens"),
        reasoning <= pl.col("output_tokens"),
        tier.is_null() | (pl.col("batch") == (tier == "batch")),
    ]


# The tier an event is priced at: its service tier, else batch or standard
# as its batch flag says (models.contracts.UsageEvent).
SERVICE_TIER: Final = pl.coalesce(
    pl.col("service_tier"),
    pl.when(pl.col("batch")).then(pl.lit("batch")).otherwise(pl.lit("standard")),
)

USAGE: Final = ColumnContract(
    UsageEvent,
    SCHEMA,
    (*IDENT_FIELDS, "ts", "status", *OPTIONAL_TEXT, "service_tier", "region"),
    _checks,
    defaults={"cache_write_1h_tokens": 0, "reasoning_tokens": 0},
)
FRAME_SCHEMA: Final = USAGE.frame_schema


def decode(messages: Sequence[Message]) -> Decoded:
    return USAGE.decode(messages)
