"""The energy side of a usage batch. Pure.

Self-hosted attempts (provider in the self-hosted set) become attribution
weights per (window, node, key), to be joined with measured node energy by
the finalizer. Every other attempt is an external API call with no
telemetry: it gets an *estimated* energy from the per-model coefficient
table (``models/data/energy_coefficients.csv``, millijoules per uncached
input, cached input and output token; row ``*`` for unlisted models), kept
apart from measured energy by ``source = 'estimated'``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import polars as pl

from pipeline.energy.attribution import BATCH_BUCKETS, BATCH_FACTORS, Weights

ENERGY_KEY: Final = ("model", "tenant", "route", "feature", "batch_bucket", "cache_state")
TOKEN_SUMS: Final = ("input_tokens", "output_tokens", "cache_read_tokens")
# An energy_usage row: its node-window and key, and what it sums.
USAGE_KEY: Final = ("window_start", "node_id", *ENERGY_KEY)
USAGE_SUMS: Final = ("attempts", *TOKEN_SUMS, "weight")
SELF_HOSTED: Final = frozenset({"self-hosted"})


@dataclass(frozen=True)
class Coefficients:
    frame: pl.DataFrame  # model, mj_per_input_token, mj_per_cached_token, mj_per_output_token

    @classmethod
    @cache
    def default(cls) -> Coefficients:
        text = resources.files("models").joinpath("data/energy_coefficients.csv").read_text()
        rows = list(csv.DictReader(text.splitlines()))
        cols = ("mj_per_input_token", "mj_per_cached_token", "mj_per_output_token")
        return cls(
            pl.DataFrame(
                {
                    "model": [r["model"] for r in rows],
                    **{c: [int(r[c]) for r in rows] for c in cols},
                },
                schema={"model": pl.String(), **dict.fromkeys(cols, pl.Int64())},
            )
        )


def _keyed(events: pl.DataFrame) -> pl.DataFrame:
    size = pl.col("batch_size")
    bucket: Any = pl.when(size.is_null()).then(pl.lit("unknown"))
    # The same buckets as pipeline.energy.attribution.batch_bucket.
    for upper, label in BATCH_BUCKETS:
        bucket = bucket.when(size <= upper).then(pl.lit(label))
    bucket = bucket.otherwise(pl.lit("65+"))
    hit = (pl.col("cache_read_tokens") > 0) | pl.col("response_cache_hit").fill_null(False)
    return events.with_columns(
        pl.col("ts").dt.truncate("1m").alias("window_start"),
        bucket.alias("batch_bucket"),
        pl.when(hit).then(pl.lit("hit")).otherwise(pl.lit("miss")).alias("cache_state"),
        (pl.col("input_tokens") - pl.col("cache_read_tokens")).alias("_uncached"),
    )


def usage_weights(
    events: pl.DataFrame, weights: Weights = Weights(), self_hosted: frozenset[str] = SELF_HOSTED
) -> pl.DataFrame:
    """energy_usage rows: per (window, node, key) attempts, tokens, weight."""
    return (
        _keyed(events.filter(pl.col("provider").is_in(list(self_hosted))))
        .group_by("window_start", "node_id", *ENERGY_KEY)
        .agg(
            pl.len().alias("attempts"),
            *(pl.col(t).sum() for t in TOKEN_SUMS),
            (
                (
                    weights.decode * pl.col("output_tokens")
                    + weights.prefill * pl.col("_uncached")
                    + weights.cached * pl.col("cache_read_tokens")
                )
                * pl.col("batch_bucket").replace_strict(BATCH_FACTORS, return_dtype=pl.Int64())
            )
            .sum()
            .alias("weight"),
        )
    )


def estimated_energy(
    events: pl.DataFrame, coefficients: Coefficients, self_hosted: frozenset[str] = SELF_HOSTED
) -> pl.DataFrame:
    """energy_window rows (source 'estimated') for external API attempts."""
    coef = coefficients.frame
    fallback = coef.filter(pl.col("model") == "*").drop("model")
    external = _keyed(events.filter(~pl.col("provider").is_in(list(self_hosted))))
    joined = external.join(coef, on="model", how="left")
    for c in fallback.columns:
        joined = joined.with_columns(pl.col(c).fill_null(fallback[c][0] if fallback.height else 0))
    return (
        joined.with_columns(
            (
                pl.col("mj_per_input_token") * pl.col("_uncached")
                + pl.col("mj_per_cached_token") * pl.col("cache_read_tokens")
                + pl.col("mj_per_output_token") * pl.col("output_tokens")
            ).alias("_mj")
        )
        .group_by("window_start", "node_id", *ENERGY_KEY)
        .agg(
            pl.len().alias("attempts"),
            *(pl.col(t).sum() for t in TOKEN_SUMS),
            pl.col("_mj").sum().alias("energy_mj"),
        )
        .with_columns(pl.lit("estimated").alias("source"))
    )


def energy_parts(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What a batch of events adds to ``energy_usage`` and, estimated, to
    ``energy_window``: the energy side of the batch's partial sums."""
    return usage_weights(events), estimated_energy(events, Coefficients.default())
