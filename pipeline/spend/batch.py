"""One usage batch on its way to the sink, in two pure steps: no I/O, no clock.

``prepare`` does all the work that does not need the database, in a thread
while the previous batch's transaction runs: admit, decode, price, drop
in-batch duplicates, dead-letter in-batch conflicts, and sum the windows
and the rules' inputs.

``settle`` decides, inside the sink's transaction, what is applied once the
sink knows what it already holds: the offsets below which nothing counts,
and which keys ``seen_event`` had (the same payload: a duplicate; another
payload: a conflict). It subtracts the partial sums of what must not count,
which in the common case is nothing, and hands the sink every row to write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import TypeVar

import polars as pl
import polars_hash as plh

from models.prices import PriceBook
from pipeline.energy.usage import energy_parts
from pipeline.spend.budgets import NO_CAPS, budget_parts
from pipeline.spend.codec import ADDED, SCHEMA, SERVICE_TIER, decode
from pipeline.spend.latency import latency_parts
from pipeline.spend.pricing import BookFrames, attach_prices
from pipeline.spend.request_costs import retry_costs
from pipeline.spend.windows import SpendWindow, aggregate, combine, with_window
from pipeline.stream.admission import Admission
from pipeline.stream.dead_letter import DeadLetter, dead_letter
from pipeline.stream.message import Message, Position, count_by_partition, raw_line
from pipeline.stream.ndjson import POSITION

T = TypeVar("T")

CONFLICT = "conflict"
_PLACE = ("partition", "offset", "line")
NONE_REFUSED: Mapping[Position, str] = MappingProxyType({})
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


def prepare(
    messages: Sequence[Message],
    book: PriceBook,
    book_frame: BookFrames,
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
    batch.dead.extend(_conflicts(raw, conflicting, "an earlier line of this batch"))
    return batch


def with_keys(events: pl.DataFrame) -> pl.DataFrame:
    """Add ``event_key``, md5 of tenant, node_id and event_id, and
    ``fingerprint``, md5 of every contract field in canonical form (so a
    re-send that only reorders keys or writes ``Z`` for ``+00:00`` matches).
    Both as 32 hex digits, which PostgreSQL reads as a uuid."""
    canonical = [
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ") if c == "ts" else pl.col(c).cast(pl.String)
        for c in SCHEMA
        if c not in ADDED
    ]
    # A field added to the contract later counts only where it says more
    # than its absence would, named, so older fingerprints still match.
    added = [
        pl.when(pl.col(c).is_null() | pl.col(c).is_in([v for v in same if v is not None]))
        .then(pl.lit(""))
        .otherwise(pl.lit(f"{_SEP}{c}=") + pl.col(c).cast(pl.String))
        for c, same in ADDED.items()
    ]
    # md5 in polars (polars-hash), not hashlib per event: the same digests,
    # without holding the GIL for every event of the batch.
    return events.with_columns(
        plh.concat_str([pl.col(c) for c in KEY_FIELDS], separator=_SEP)
        .nchash.md5()
        .alias("event_key"),
        plh.concat_str(
            [pl.concat_str([c.fill_null("\x00null") for c in canonical], separator=_SEP), *added]
        )
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


# unpriced_event's columns, in its order: what repricing needs of an event.
UNPRICED_COLUMNS = (
    "event_key",
    "ts",
    "window_start",
    "tenant",
    "route",
    "feature",
    "provider",
    "model",
    "attempt",
    "failed",
    "invalid",
    "batch",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "region",
    "service_tier",
)


@dataclass(frozen=True)
class Settled:
    """What the sink writes for a batch: every row, and the offset counters."""

    events: pl.DataFrame  # the events that count, as prepared
    windows: list[SpendWindow]
    latency: pl.DataFrame
    retries: pl.DataFrame
    budgets: pl.DataFrame
    energy: tuple[pl.DataFrame, pl.DataFrame] | None
    unpriced: pl.DataFrame  # UNPRICED_COLUMNS of the events with no price
    dead: list[DeadLetter]
    conflicts: int  # of ``dead``: keys re-used with another payload
    accepted: Counter[int]  # per partition
    duplicates: Counter[int]
    newest: dict[int, datetime]  # newest event time counted, per partition


def unseen(
    batch: PreparedBatch, floor: Mapping[int, int], refused: Mapping[Position, str] = NONE_REFUSED
) -> pl.DataFrame:
    """The events at or above their partition's floor and not refused, which
    the sink must look up in ``seen_event``; ``idx`` is their row in
    ``batch.events``."""
    events = batch.events.with_row_index("idx")
    return events.filter(~already_applied(events, floor) & ~_at(events, refused))


def positions(events: pl.DataFrame) -> list[Position]:
    """Where each row of a decoded frame came from."""
    return [(int(p), int(o), int(n)) for p, o, n in events.select(*_PLACE).iter_rows()]


def _at(rows: pl.DataFrame, places: Mapping[Position, str]) -> pl.Series:
    """Which of ``rows`` sit at one of ``places``."""
    if not places:
        return pl.repeat(False, rows.height, eager=True, dtype=pl.Boolean())
    where = pl.DataFrame(list(places), schema=POSITION, orient="row").with_columns(_at=True)
    found = rows.select(_PLACE).join(where, on=_PLACE, how="left", maintain_order="left")
    return found["_at"].fill_null(False)


def settle(
    batch: PreparedBatch,
    book: PriceBook,
    floor: Mapping[int, int],
    seen_same: Collection[int],
    seen_other: Collection[int],
    refused: Mapping[Position, str] = NONE_REFUSED,
) -> Settled:
    """What is applied of ``batch``, given ``floor`` (per partition, the offset
    below which an earlier transaction committed everything), the rows of
    ``unseen(batch, floor, refused)`` whose key ``seen_event`` already held
    with the same payload (``seen_same``: duplicates) or another one
    (``seen_other``: conflicts, dead-lettered), and the lines the database
    ``refused`` (dead-lettered with their reason; an empty reason leaves a
    line out of a trial write)."""
    events = batch.events.with_row_index("idx")
    is_dup = events["idx"].is_in(list(seen_same))
    is_conflict = events["idx"].is_in(list(seen_other))
    is_refused = _at(events, refused)
    drop = already_applied(events, floor) | is_dup | is_conflict | is_refused
    whole = not drop.any()
    kept = batch.events if whole else batch.events.filter(~drop)
    windows = (
        batch.windows
        if whole
        else combine(
            batch.windows, [w.negated() for w in aggregate(batch.events.filter(drop), book)]
        )
    )

    def part(prepared: T, recompute: Callable[[pl.DataFrame], T]) -> T:
        # As prepared in the thread when nothing was dropped (the common case).
        return prepared if whole else recompute(kept)

    conflicting = events.filter(is_conflict)
    dead = [d for d in batch.dead if d.offset >= floor[d.partition]]
    dead += _conflicts(batch.raw, conflicting, "an event already counted")
    # A later copy in this batch of an event that conflicts is a conflict
    # too, not a duplicate of a line that was rejected.
    repeats = batch.repeats.filter(~already_applied(batch.repeats, floor))
    repeat_conflicts = repeats["event_key"].is_in(conflicting["event_key"].implode())
    dead += _conflicts(batch.raw, repeats.filter(repeat_conflicts), "an event already counted")
    repeats = repeats.filter(~repeat_conflicts)
    # The same goes for a later copy of a line the database refused.
    gone = events.filter(is_refused & ~already_applied(events, floor))
    dead += [
        dead_letter(p, o, n, refused[(p, o, n)], raw_line(batch.raw[(p, o)], n))
        for p, o, n in positions(gone)
        if refused[(p, o, n)]
    ]
    why = dict(zip(gone["event_key"].to_list(), (refused[x] for x in positions(gone)), strict=True))
    copies = repeats.filter(pl.col("event_key").is_in(list(why)))
    dead += [
        dead_letter(p, o, n, why[k], raw_line(batch.raw[(p, o)], n))
        for p, o, n, k in copies.select(*_PLACE, "event_key").iter_rows()
        if why[k]
    ]
    repeats = repeats.filter(~pl.col("event_key").is_in(list(why)))
    return Settled(
        events=kept,
        windows=windows,
        latency=part(batch.latency, latency_parts),
        retries=part(batch.retries, partial(retry_costs, book=book)),
        budgets=part(batch.budgets, partial(budget_parts, caps=batch.caps)),
        energy=None if batch.energy is None else part(batch.energy, energy_parts),
        unpriced=unpriced_rows(kept.filter(pl.col("price_id").is_null())),
        dead=dead,
        conflicts=sum(1 for d in dead if d.reason.startswith(CONFLICT)),
        accepted=count_by_partition(kept),
        duplicates=count_by_partition(repeats) + count_by_partition(events.filter(is_dup)),
        newest=dict(kept.group_by("partition").agg(pl.col("ts").max()).iter_rows()),
    )


def unpriced_rows(unpriced: pl.DataFrame) -> pl.DataFrame:
    derived = {
        "failed": pl.col("status") != "ok",
        "invalid": pl.col("status") == "invalid_output",
        "region": pl.col("region").fill_null(""),
        "service_tier": SERVICE_TIER,
    }
    return with_window(unpriced).select(
        derived.get(c, pl.col(c)).alias(c) for c in UNPRICED_COLUMNS
    )


def _conflicts(
    raw: Mapping[tuple[int, int], bytes], rows: pl.DataFrame, where: str
) -> list[DeadLetter]:
    """Dead letters for events whose key was seen with another payload."""
    return [
        dead_letter(
            p,
            o,
            n,
            f"{CONFLICT}: same (tenant, node_id, event_id) as {where}, different payload",
            raw_line(raw[(p, o)], n),
        )
        for p, o, n in rows.select("partition", "offset", "line").iter_rows()
    ]
