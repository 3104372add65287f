"""Token-budget breaches per window: attempts over their route's input or
output cap, as the route catalog declared it when the event was processed.

Pure: the caps come in as a frame (route, input_cap, output_cap), loaded by
the worker from ``route_catalog`` and refreshed when the catalog changes. A
route the catalog does not declare has no budget to breach.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import polars as pl

from models.catalog import Route

KEY: Final = ("window_start", "tenant", "route", "model")
SUMS: Final = ("over_input", "over_output", "over_tokens")
CAPS_SCHEMA: Final = {"route": pl.String(), "input_cap": pl.Int64(), "output_cap": pl.Int64()}
_SCHEMA: Final = {
    "window_start": pl.Datetime("us", "UTC"),
    "tenant": pl.String(),
    "route": pl.String(),
    "model": pl.String(),
    **{c: pl.Int64() for c in SUMS},
}
NO_CAPS: Final = pl.DataFrame(schema=CAPS_SCHEMA)


def caps_frame(routes: Iterable[Route]) -> pl.DataFrame:
    return pl.DataFrame(
        [(r.route, r.token_budget.input_cap, r.token_budget.output_cap) for r in routes],
        schema=CAPS_SCHEMA,
        orient="row",
    )


def budget_parts(events: pl.DataFrame, caps: pl.DataFrame) -> pl.DataFrame:
    """Per (window, tenant, route, model): attempts over the input cap, over
    the output cap, and the tokens beyond the caps. Only breaching attempts
    make rows, so a catalog that fits its traffic costs nothing to store."""
    if caps.is_empty() or events.is_empty():
        return pl.DataFrame(schema=_SCHEMA)
    over_in = pl.col("input_tokens") > pl.col("input_cap")
    over_out = pl.col("output_tokens") > pl.col("output_cap")
    beyond = (pl.col("input_tokens") - pl.col("input_cap")).clip(lower_bound=0) + (
        pl.col("output_tokens") - pl.col("output_cap")
    ).clip(lower_bound=0)
    return (
        events.select("ts", "tenant", "route", "model", "input_tokens", "output_tokens")
        .join(caps, on="route", how="inner")
        .filter(over_in | over_out)
        .group_by(pl.col("ts").dt.truncate("1m").alias("window_start"), "tenant", "route", "model")
        .agg(
            over_in.sum().cast(pl.Int64()).alias("over_input"),
            over_out.sum().cast(pl.Int64()).alias("over_output"),
            beyond.sum().cast(pl.Int64()).alias("over_tokens"),
        )
        .cast(_SCHEMA)  # type: ignore[arg-type]
    )
