"""The spend agent: batches of usage messages in, committed window sums out.

Thin on purpose: take a batch without acking, do the pure work in a thread
(polars releases the GIL, so faust keeps fetching meanwhile), publish dead
letters, let the sink commit, and only then ack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust

from models.prices import PriceBook
from pipeline.settings import Settings
from pipeline.spend.batch import PreparedBatch, prepare
from pipeline.spend.budgets import NO_CAPS
from pipeline.spend.pricing import book_frame
from pipeline.spend.sink import SpendSink
from pipeline.stream.ndjson import Message
from pipeline.stream.stages import StageClock, run_stages
from pipeline.worker.app import Topics

log = logging.getLogger(__name__)


@dataclass
class AgentStats:
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    conflicts: int = 0
    fenced_batches: int = 0
    batches: int = 0
    first_message_at: float | None = None
    last_commit_at: float | None = None
    drained_at: float | None = None  # --drain: every joined topic applied and split
    started_at: float = field(default_factory=time.time)
    # Per agent (spend, telemetry, cache): how busy its stages were.
    stages: dict[str, StageClock] = field(default_factory=dict)


class ReferenceData:
    """The worker's snapshot of the price book and the route catalog's token
    caps, each reloaded when its revision changes."""

    def __init__(self, reader: SpendSink, reprice: Callable[[], Awaitable[None]]) -> None:
        # Its own connection, so a refresh never waits behind the sink's
        # transaction while the next batch is being prepared.
        self._sink = reader
        self.reprice = reprice
        self.revision = -1
        self.book = PriceBook()
        self.frame = book_frame(self.book)
        self.catalog_revision = ""
        self.caps = NO_CAPS

    async def refresh(self) -> None:
        prices, catalog = await self._sink.reference_revision()
        if catalog != self.catalog_revision:
            self.caps, self.catalog_revision = await self._sink.budget_caps(), catalog
            log.info("route catalog %s: token caps for %d routes", catalog, self.caps.height)
        if prices == self.revision:
            return
        self.book, self.revision = await self._sink.price_book()
        self.frame = book_frame(self.book)
        log.info("price book revision %s: %d entries", self.revision, len(self.book))
        await self.reprice()


def attach_spend_agent(
    app: faust.App,
    topics: Topics,
    settings: Settings,
    sink: SpendSink,
    prices: ReferenceData,
    stats: AgentStats,
    fault_hook: Callable[[str], None] = lambda point: None,
) -> None:
    """The usage topic through :func:`pipeline.stages.run_stages`: prepare
    decodes, prices and sums a batch in a thread and publishes its dead
    letters; commit applies it in the sink's transaction."""

    async def prepare_batch(messages: list[Message]) -> Prepared:
        await prices.refresh()
        book, frame, revision = prices.book, prices.frame, prices.revision
        admission = settings.admission(datetime.now(UTC))
        batch = await asyncio.to_thread(
            partial(prepare, energy=settings.joins, caps=prices.caps),
            messages,
            book,
            frame,
            admission,
        )
        # At least once to the DLQ topic: published before the commit, so
        # a crash in between re-publishes rather than loses.
        published = [
            await topics.usage_dlq.send(
                key=str(d.partition).encode(),
                value=d.raw,
                headers={
                    "reason": d.reason.encode(),
                    "partition": str(d.partition).encode(),
                    "offset": str(d.offset).encode(),
                    "line": str(d.line).encode(),
                },
            )
            for d in batch.dead
        ]
        await asyncio.gather(*published)
        return Prepared(batch, book, revision)

    async def commit_batch(messages: list[Message], p: Prepared) -> tuple[int, ...]:
        fault_hook("before_commit")
        applied = await sink.apply(p.batch, p.book)
        fault_hook("after_commit")
        stats.messages += len(messages)
        stats.accepted += applied.accepted
        stats.duplicates += applied.duplicates
        stats.dead_lettered += applied.dead_lettered
        stats.conflicts += applied.conflicts
        stats.fenced_batches += bool(applied.fenced)
        stats.batches += 1
        stats.last_commit_at = time.time()
        if p.revision < prices.revision and p.batch.events["price_id"].null_count():
            # Priced with an older book than the current one: its unpriced
            # events may have missed the reprice the new book triggered.
            await prices.reprice()
        return applied.fenced

    def first_batch() -> None:
        if stats.first_message_at is None:
            stats.first_message_at = time.time()

    @app.agent(topics.usage, name="spend")
    async def spend(stream: Any) -> None:
        clock = stats.stages.setdefault("spend", StageClock())
        await run_stages(stream, settings, prepare_batch, commit_batch, clock, first_batch)


@dataclass(frozen=True)
class Prepared:
    batch: PreparedBatch
    book: PriceBook
    revision: int


def stats_json(stats: AgentStats, faults: Mapping[str, int]) -> str:
    """The worker's counters, and the faults it met by kind (see ``fault`` log lines)."""
    return json.dumps({**asdict(stats), "faults": dict(faults)})
