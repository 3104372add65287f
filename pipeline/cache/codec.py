"""The cache-event contract's column-wise twin: cache events come several
per model call, so they take the same fast path as usage."""

from __future__ import annotations

from typing import Final

import polars as pl

from models.contracts import MAX_COUNT, CacheEvent
from pipeline.stream.ndjson import ColumnContract, ident, integer, timestamp, tokens

SCHEMA: Final[dict[str, pl.DataType]] = {
    "node_id": pl.String(),
    "ts": pl.String(),
    "tenant": pl.String(),
    "route": pl.String(),
    "layer": pl.String(),
    "op": pl.String(),
    "tokens": pl.Int64(),
    "owner_tenant": pl.String(),
    "model": pl.String(),
    "provider": pl.String(),
    "output_tokens": pl.Int64(),
    "count": pl.Int64(),
}
LAYERS: Final = ["prefix", "embedding", "response", "semantic"]
OPS: Final = ["hit", "miss", "insert", "evict"]


def _checks() -> list[pl.Expr]:
    return [
        *(ident(f) for f in ("node_id", "tenant", "route")),
        *(ident(f, required=False) for f in ("owner_tenant", "model", "provider")),
        timestamp(),
        pl.col("layer").is_not_null() & pl.col("layer").is_in(LAYERS),
        pl.col("op").is_not_null() & pl.col("op").is_in(OPS),
        tokens("tokens"),
        tokens("output_tokens", required=False),
        integer("count", 1, MAX_COUNT, required=False),
        (pl.col("op") != "evict") | pl.col("owner_tenant").is_not_null(),
    ]


CACHE: Final = ColumnContract(
    CacheEvent,
    SCHEMA,
    tuple(f for f, t in SCHEMA.items() if t == pl.String()),
    _checks,
    defaults={"output_tokens": 0, "count": 1},
)
