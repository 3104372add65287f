"""One stream batch on its way to the sink. Pure functions: no I/O, no clock.

``prepare`` does all the work that does not need the database, in a thread
while the previous batch's transaction runs: admit, decode, price, drop
in-batch duplicates, dead-letter in-batch conflicts, and sum the windows.
The sink then only learns which events it must *not* count (offsets already
applied, keys already seen) and subtracts their partial sums, which in the
common case are none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import polars as pl
import polars_hash as plh

from models.prices import PriceBook
from pipeline.energy.usage import energy_parts
from pipeline.spend.budgets import NO_CAPS, budget_parts
from pipeline.spend.codec import SCHEMA, Message, decode, split_lines
from pipeline.spend.latency import latency_parts
from pipeline.spend.pricing import attach_prices
from pipeline.spend.request_costs import retry_costs
from pipeline.spend.windows import SpendWindow, aggregate, combine
from pipeline.stream.admission import Admission
from pipeline.stream.dead_letter import DeadLetter, dead_letter
from pipeline.stream.ndjson import count_by_partition

T = TypeVar("T")

CONFLICT = "conflict"
# What identifies an event (DESIGN: the idempotency key, scoped by who sent it).
KEY_FIELDS = ("tenant", "node_id", "event_id")
# The contract refuses NUL in identifiers, so joining them with NUL is unambiguous.
_SEP = "\x00"


@dataclass(frozen=True)
class PreparedBatch:
    # Valid, admitted, priced (price_id null: unpriced); the first copy of
    # each event key, with its ``event_key`` and payload ``fingerprint``.
    events: pl.DataFrame
    dead: list[DeadLetter]
    # partition -> last offset in this batch (every message counts, valid or
    # not: its offset is consumed either way)
    last_offsets: dict[int, int]
    first_offsets: dict[int, int]
    windows: list[SpendWindow]  # partial sums of `events`
    # energy_usage and estimated rows of `events`; None when joins are off.
    energy: tuple[pl.DataFrame, pl.DataFrame] | None
    # Inputs of the anomaly rules, of `events`: latency histogram rows, the
    # retry cost of each retried request, and token-budget breaches.
    latency: pl.DataFrame
    retries: pl.DataFrame
    budgets: pl.DataFrame  # attempts over their route's token caps...
    caps: pl.DataFrame  # ...as the catalog declared them for this batch
    # Later copies of an event within this batch, by position: the sink counts
    # those at or above its offsets (a redelivered batch's were counted before).
    repeats: pl.DataFrame
    raw: Mapping[tuple[int, int], bytes]  # (partition, offset) -> message value

    @property
    def duplicates(self) -> Counter[int]:
        """partition -> repeated events within this batch."""
        return count_by_partition(self.repeats)

    @property
    def partitions(self) -> list[int]:
        return sorted(self.last_offsets)

    def part_of(self, kept: pl.DataFrame, prepared: T, recompute: Callable[[pl.DataFrame], T]) -> T:
        """A part of ``events`` prepared in the thread, for the rows the sink
        kept: as prepared when nothing was dropped (the common case),
        recomputed from ``kept`` otherwise."""
        return prepared if kept.height == self.events.height else recompute(kept)

    def conflicts(self, rows: pl.DataFrame, where: str) -> list[DeadLetter]:
        """Dead letters for events whose key was seen with another payload."""
        return [
            dead_letter(
                p,
                o,
                n,
                f"{CONFLICT}: same (tenant, node_id, event_id) as {where}, different payload",
                raw_line(self.raw[(p, o)], n),
            )
            for p, o, n in rows.select("partition", "offset", "line").iter_rows()
        ]


def prepare(
    messages: Sequence[Message],
    book: PriceBook,
    book_frame: pl.DataFrame,
    admission: Admission,
    *,
    energy: bool = True,
    caps: pl.DataFrame = NO_CAPS,
) -> PreparedBatch:
    last: dict[int, int] = {}
    first: dict[int, int] = {}
    for m in messages:
        last[m.partition] = max(m.offset, last.get(m.partition, -1))
        first[m.partition] = min(m.offset, first.get(m.partition, m.offset))
    raw = {(m.partition, m.offset): m.value for m in messages}
    dead: list[DeadLetter] = []
    admitted: list[Message] = []
    for m in messages:
        too_large = admission.size_verdict(len(m.value))
        if too_large:
            dead.append(dead_letter(m.partition, m.offset, 0, too_large, m.value))
        else:
            admitted.append(m)
    decoded = decode(admitted)
    dead.extend(decoded.dead)
    events = decoded.events.with_columns(admission.ts_verdict().alias("_late"))
    out_of_bounds = events.filter(pl.col("_late").is_not_null())
    dead.extend(
        dead_letter(p, o, n, reason, raw_line(raw[(p, o)], n))
        for p, o, n, reason in out_of_bounds.select("partition", "offset", "line", "_late").rows()
    )
    events = events.filter(pl.col("_late").is_null()).drop("_late")
    priced = with_keys(attach_prices(events, book_frame)).sort("partition", "offset", "line")
    is_first = pl.col("event_key").is_first_distinct()
    unique = priced.filter(is_first)
    # A later copy in this batch is a duplicate if its payload is the first
    # copy's, else a conflict: rejected, never merged.
    repeats = priced.filter(~is_first).join(
        unique.select("event_key", pl.col("fingerprint").alias("_first")), on="event_key"
    )
    conflicting = repeats.filter(pl.col("fingerprint") != pl.col("_first"))
    batch = PreparedBatch(
        events=unique,
        dead=dead,
        last_offsets=last,
        first_offsets=first,
        windows=aggregate(unique, book),
        energy=energy_parts(unique) if energy else None,
        latency=latency_parts(unique),
        retries=retry_costs(unique, book),
        budgets=budget_parts(unique, caps),
        caps=caps,
        repeats=repeats.filter(pl.col("fingerprint") == pl.col("_first")).select(
            "partition", "offset", "line", "event_key"
        ),
        raw=raw,
    )
    batch.dead.extend(batch.conflicts(conflicting, "an earlier line of this batch"))
    return batch


def raw_line(value: bytes, line: int) -> bytes:
    lines = split_lines(value)
    return lines[line] if 0 <= line < len(lines) else value


def with_keys(events: pl.DataFrame) -> pl.DataFrame:
    """Add ``event_key``, md5 of tenant, node_id and event_id, and
    ``fingerprint``, md5 of every contract field in canonical form (so a
    re-send that only reorders keys or writes ``Z`` for ``+00:00`` matches).
    Both as 32 hex digits, which PostgreSQL reads as a uuid."""
    canonical = [
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ") if c == "ts" else pl.col(c).cast(pl.String)
        for c in SCHEMA
    ]
    # md5 in polars (polars-hash), not hashlib per event: the same digests,
    # without holding the GIL for every event of the batch.
    return events.with_columns(
        plh.concat_str([pl.col(c) for c in KEY_FIELDS], separator=_SEP)
        .nchash.md5()
        .alias("event_key"),
        plh.concat_str([c.fill_null("\x00null") for c in canonical], separator=_SEP)
        .nchash.md5()
        .alias("fingerprint"),
    )


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


def energy_of(batch: PreparedBatch, kept: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The energy parts of ``kept``; None when joins are off."""
    return None if batch.energy is None else batch.part_of(kept, batch.energy, energy_parts)
