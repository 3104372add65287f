"""The usage contract's column-wise twin: decode a batch of usage messages
into one validated polars frame (see ``pipeline.stream.ndjson``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from models.contracts import MAX_BATCH_SIZE, MAX_MS, UsageEvent
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
    ]
    return [
        *(ident(f) for f in IDENT_FIELDS),
        *(tokens(f) for f in TOKEN_FIELDS),
        *optional,
        timestamp(),
        integer("attempt", 1, 10_000),
        pl.col("batch").is_not_null(),
        pl.col("status").is_not_null() & pl.col("status").is_in(_STATUSES),
        (pl.col("cache_read_tokens") + pl.col("cache_write_tokens")) <= pl.col("input_tokens"),
    ]


USAGE: Final = ColumnContract(
    UsageEvent, SCHEMA, (*IDENT_FIELDS, "ts", "status", *OPTIONAL_TEXT), _checks
)
FRAME_SCHEMA: Final = USAGE.frame_schema


def decode(messages: Sequence[Message]) -> Decoded:
    return USAGE.decode(messages)
