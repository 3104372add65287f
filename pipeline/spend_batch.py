"""One stream batch on its way to the sink: decode, price, then trim to what
has not been applied yet. Pure functions: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import polars as pl

from pipeline.dead_letter import DeadLetter
from pipeline.pricing import attach_prices
from pipeline.usage_codec import Message, decode


@dataclass(frozen=True)
class PreparedBatch:
    events: pl.DataFrame  # valid events with price_id (null: unpriced)
    dead: list[DeadLetter]
    # partition -> last offset seen in this batch (every message counts,
    # valid or not: the offset is consumed either way)
    last_offsets: dict[int, int]

    @property
    def partitions(self) -> list[int]:
        return sorted(self.last_offsets)


def prepare(messages: Sequence[Message], book: pl.DataFrame) -> PreparedBatch:
    decoded = decode(messages)
    last: dict[int, int] = {}
    for m in messages:
        last[m.partition] = max(m.offset, last.get(m.partition, -1))
    return PreparedBatch(attach_prices(decoded.events, book), decoded.dead, last)


def unapplied(batch: PreparedBatch, next_offsets: Mapping[int, int]) -> PreparedBatch:
    """Drop what the sink has already applied: every offset below the stored
    next offset of its partition was committed by an earlier transaction."""
    if not next_offsets:
        return batch
    floor = pl.DataFrame(
        {"partition": list(next_offsets), "_next": list(next_offsets.values())},
        schema={"partition": pl.Int32(), "_next": pl.Int64()},
    )
    events = (
        batch.events.join(floor, on="partition", how="left")
        .filter(pl.col("_next").is_null() | (pl.col("offset") >= pl.col("_next")))
        .drop("_next")
    )
    dead = [d for d in batch.dead if d.offset >= next_offsets.get(d.partition, 0)]
    return replace(batch, events=events, dead=dead)


def first_occurrences(events: pl.DataFrame) -> pl.DataFrame:
    """Keep the first copy of each event_id in log order."""
    return events.sort("partition", "offset", "line").filter(pl.col("event_id").is_first_distinct())
