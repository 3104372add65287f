"""Column-wise pricing: an as-of join of events with the price book on ``ts``.

The join only finds *which* price version applies to each event; the money
itself is computed in ``Decimal`` by :mod:`models.money` on summed token
counts (the cost rule is linear), so no binary float touches a cost.
"""

from __future__ import annotations

import polars as pl

from models.prices import PriceBook

BOOK_SCHEMA = {
    "model": pl.String(),
    "provider": pl.String(),
    "effective_from": pl.Datetime("us", "UTC"),
    "price_id": pl.Int64(),
}


def book_frame(book: PriceBook) -> pl.DataFrame:
    """The price book as a frame; ``price_id`` indexes ``book.entries``."""
    rows = [(e.model, e.provider, e.effective_from, i) for i, e in enumerate(book.entries)]
    return pl.DataFrame(rows, schema=BOOK_SCHEMA, orient="row").sort("effective_from")


def attach_prices(events: pl.DataFrame, book: pl.DataFrame) -> pl.DataFrame:
    """Add ``price_id``: the version in force at each event's ts, null if none."""
    return (
        events.sort("ts")
        .join_asof(
            book,
            left_on="ts",
            right_on="effective_from",
            by=["model", "provider"],
            strategy="backward",
            check_sortedness=False,
        )
        .drop("effective_from")
    )
