"""Column-wise pricing: which price entry prices each event, as as-of joins
of the events with the price book on ``ts`` (the version in force) and on
``input_tokens`` (the prompt-size tier of that version), following the
book's fallbacks (:meth:`models.prices.PriceBook.rate`) level by level.

The joins only find *which* entry applies to each event; the money itself
is computed in ``Decimal`` by :mod:`models.money` on summed token counts
(the cost rule is linear), so no binary float touches a cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from models.prices import STANDARD, PriceBook, fallbacks
from pipeline.spend.codec import SERVICE_TIER

_KEY: Final = ("model", "provider", "_r", "_t")
VERSIONS_SCHEMA: Final = {
    "model": pl.String(),
    "provider": pl.String(),
    "_r": pl.String(),
    "_t": pl.String(),
    "effective_from": pl.Datetime("us", "UTC"),
    "_version": pl.Int64(),
}
TIERS_SCHEMA: Final = {
    "_version": pl.Int64(),
    "_from": pl.Int64(),
    "_price": pl.Int64(),
}
# What pricing adds to an event: the entry that prices it (null: unpriced),
# whether its batch discount applies, and the standard-tier entry it lists at.
PRICED: Final = {
    "price_id": pl.Int64(),
    "discounted": pl.Boolean(),
    "list_price_id": pl.Int64(),
}


@dataclass(frozen=True)
class BookFrames:
    """The price book as frames: every version of every key, and the
    prompt-size tiers of each version (``_price`` indexes ``book.entries``)."""

    book: PriceBook
    versions: pl.DataFrame
    tiers: pl.DataFrame
    tiered: bool  # whether any version has more than one tier


def book_frame(book: PriceBook) -> BookFrames:
    versions: list[tuple[object, ...]] = []
    tiers: list[tuple[int, int, int]] = []
    starts: dict[tuple[object, ...], int] = {}
    for i, e in enumerate(book.entries):
        start = (*e.key, e.effective_from)
        if start not in starts:
            starts[start] = len(versions)
            versions.append((*start, len(versions)))
        tiers.append((starts[start], e.from_input_tokens, i))
    return BookFrames(
        book,
        pl.DataFrame(versions, schema=VERSIONS_SCHEMA, orient="row").sort("effective_from"),
        pl.DataFrame(tiers, schema=TIERS_SCHEMA, orient="row").sort("_from"),
        len(tiers) > len(versions),
    )


def _levels(
    combos: list[tuple[str, str, str, str]], book: PriceBook
) -> list[list[tuple[str, str, str, str, str, str, bool]]]:
    """Per fallback level, for each (model, provider, region, tier) of the
    events, the book key to try at that level and whether it discounts."""
    keys = book.keys
    levels: list[list[tuple[str, str, str, str, str, str, bool]]] = []
    for model, provider, region, tier in combos:
        tried = [
            (r, t, discounted)
            for r, t, discounted in fallbacks(region, tier)
            if (model, provider, r, t) in keys
        ]
        for n, (r, t, discounted) in enumerate(tried):
            if n == len(levels):
                levels.append([])
            levels[n].append((model, provider, region, tier, r, t, discounted))
    return levels


_LEVEL_SCHEMA: Final = {
    "model": pl.String(),
    "provider": pl.String(),
    "_region": pl.String(),
    "_tier": pl.String(),
    "_r": pl.String(),
    "_t": pl.String(),
    "_discounted": pl.Boolean(),
}


def _entry(events: pl.DataFrame, frames: BookFrames, tier: pl.Expr) -> pl.DataFrame:
    """``events`` (with ``_i``) and the entry that prices each at ``tier``:
    columns ``_price`` (null: no price) and ``_discounted``."""
    looked = events.select(
        "_i", "ts", "model", "provider", "input_tokens", "_region", tier.alias("_tier")
    )
    combos = looked.select("model", "provider", "_region", "_tier").unique().rows()
    found = looked.select("_i").with_columns(
        pl.lit(None, pl.Int64()).alias("_version"), pl.lit(False).alias("_discounted")
    )
    for level in _levels(combos, frames.book):
        keys = pl.DataFrame(level, schema=_LEVEL_SCHEMA, orient="row")
        at = (
            looked.join(keys, on=["model", "provider", "_region", "_tier"])
            .sort("ts")
            .join_asof(
                frames.versions,
                left_on="ts",
                right_on="effective_from",
                by=list(_KEY),
                strategy="backward",
                check_sortedness=False,
            )
            .select("_i", pl.col("_version").alias("_v"), pl.col("_discounted").alias("_d"))
        )
        found = (
            found.join(at, on="_i", how="left")
            .with_columns(
                pl.when(pl.col("_version").is_null())
                .then(pl.col("_d").fill_null(False))
                .otherwise(pl.col("_discounted"))
                .alias("_discounted"),
                pl.coalesce("_version", "_v").alias("_version"),
            )
            .drop("_v", "_d")
        )
    found = found.join(looked.select("_i", "input_tokens"), on="_i")
    if frames.tiered:
        first = frames.tiers.group_by("_version").agg(pl.col("_price").sort_by("_from").first())
        picked = (
            found.sort("input_tokens")
            .join_asof(
                frames.tiers,
                left_on="input_tokens",
                right_on="_from",
                by="_version",
                strategy="backward",
                check_sortedness=False,
            )
            .join(first.rename({"_price": "_first"}), on="_version", how="left")
            .with_columns(pl.coalesce("_price", "_first").alias("_price"))
        )
    else:
        picked = found.join(frames.tiers.select("_version", "_price"), on="_version", how="left")
    return picked.select("_i", "_price", "_discounted")


def attach_prices(events: pl.DataFrame, frames: BookFrames) -> pl.DataFrame:
    """Add :data:`PRICED`: the entry in force for each event's key, tier and
    prompt size at its ts (null if none), and the standard-tier entry it
    lists at. The rows come back in ``ts`` order."""
    tier = SERVICE_TIER.alias("_tier")
    indexed = events.with_row_index("_i").with_columns(
        pl.col("region").fill_null("").alias("_region"), tier
    )
    priced = _entry(indexed, frames, pl.col("_tier"))
    # A call at another tier lists at the standard tier's rates.
    other = indexed.filter(pl.col("_tier") != STANDARD)
    listed = _entry(other, frames, pl.lit(STANDARD).alias("_tier")).select(
        "_i", pl.col("_price").alias("_list")
    )
    return (
        indexed.join(priced, on="_i", how="left")
        .join(listed, on="_i", how="left")
        .sort("_i")
        .with_columns(
            pl.col("_price").alias("price_id"),
            (pl.col("_discounted") & pl.col("_price").is_not_null()).alias("discounted"),
            pl.coalesce("_list", "_price").alias("list_price_id"),
        )
        .drop("_i", "_region", "_tier", "_price", "_discounted", "_list")
        .sort("ts", maintain_order=True)
    )
