"""One stream batch on its way to the sink. Pure functions: no I/O, no clock.

``prepare`` does all the work that does not need the database, in a thread
while the previous batch's transaction runs: decode, price, drop in-batch
duplicates, and sum the windows. The sink then only learns which events it
must *not* count (offsets already applied, keys already seen) and subtracts
their partial sums, which in the common case are none.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from models.prices import PriceBook
from pipeline.dead_letter import DeadLetter
from pipeline.pricing import attach_prices
from pipeline.spend_windows import SpendWindow, aggregate, combine
from pipeline.usage_codec import Message, decode


@dataclass(frozen=True)
class PreparedBatch:
    events: pl.DataFrame  # valid, priced (price_id null: unpriced), first copy of each event_id
    dead: list[DeadLetter]
    # partition -> last offset in this batch (every message counts, valid or
    # not: its offset is consumed either way)
    last_offsets: dict[int, int]
    windows: list[SpendWindow]  # partial sums of `events`
    duplicates: Counter[int]  # partition -> repeated event_ids within this batch

    @property
    def partitions(self) -> list[int]:
        return sorted(self.last_offsets)


def prepare(
    messages: Sequence[Message], book: PriceBook, book_frame: pl.DataFrame
) -> PreparedBatch:
    decoded = decode(messages)
    last: dict[int, int] = {}
    for m in messages:
        last[m.partition] = max(m.offset, last.get(m.partition, -1))
    priced = attach_prices(decoded.events, book_frame)
    unique = first_occurrences(priced)
    unique = unique.with_columns(event_keys(unique["event_id"]))
    return PreparedBatch(
        events=unique,
        dead=decoded.dead,
        last_offsets=last,
        windows=aggregate(unique, book),
        duplicates=count_by_partition(priced) - count_by_partition(unique),
    )


def count_by_partition(events: pl.DataFrame) -> Counter[int]:
    return Counter(dict(events.group_by("partition").len().iter_rows()))


def event_keys(event_ids: pl.Series) -> pl.Series:
    """The dedup key: md5 of the event_id's UTF-8 bytes, as 32 hex digits,
    byte for byte what PostgreSQL's ``md5(event_id)::uuid`` gives."""
    md5 = hashlib.md5
    return pl.Series(
        "event_key",
        [md5(e.encode()).hexdigest() for e in event_ids.to_list()],
        dtype=pl.String(),
    )


def first_occurrences(events: pl.DataFrame) -> pl.DataFrame:
    """Keep the first copy of each event_id in log order."""
    return events.sort("partition", "offset", "line").filter(pl.col("event_id").is_first_distinct())


def already_applied(events: pl.DataFrame, next_offsets: Mapping[int, int]) -> pl.Series:
    """Which rows sit below their partition's stored next offset: an earlier
    transaction committed them, so they must not count again."""
    floor = pl.DataFrame(
        {"partition": list(next_offsets), "_next": list(next_offsets.values())},
        schema={"partition": pl.Int32(), "_next": pl.Int64()},
    )
    return (
        events.select("partition", "offset")
        .join(floor, on="partition", how="left", maintain_order="left")
        .select((pl.col("offset") < pl.col("_next").fill_null(0)).alias("applied"))
        .to_series()
    )


def without(
    batch: PreparedBatch, drop: pl.Series, book: PriceBook
) -> tuple[pl.DataFrame, list[SpendWindow]]:
    """The events to keep and their windows: the prepared sums minus those of
    the dropped rows (the cost rule is linear, so this is exact)."""
    if not drop.any():
        return batch.events, batch.windows
    kept = batch.events.filter(~drop)
    removed = aggregate(batch.events.filter(drop), book)
    return kept, combine(batch.windows, [w.negated() for w in removed])
