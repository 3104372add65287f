"""The spend agent: batches of usage messages in, committed window sums out.

Thin on purpose: take a batch without acking, do the pure work in a thread
(polars releases the GIL, so faust keeps fetching meanwhile), publish dead
letters, let the sink commit, and only then ack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust

from models.prices import PriceBook
from pipeline.app import Topics
from pipeline.budgets import NO_CAPS
from pipeline.ndjson_codec import Message
from pipeline.pricing import book_frame
from pipeline.settings import Settings
from pipeline.spend_batch import PreparedBatch, prepare
from pipeline.spend_sink import SpendSink

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
    # Where the time goes: pure batch work (in a thread) and the sink transaction.
    prepare_s: float = 0.0
    sink_s: float = 0.0
    started_at: float = field(default_factory=time.time)


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
    """Three stages joined by small bounded queues, so each overlaps the others:

    intake (the agent loop) -> prepare (decode, price, sum; in a thread)
    -> commit (the sink transaction, then the acks).

    ``noack_take`` refills its buffer only when the loop asks for the next
    batch, so the loop must hand a batch over and come straight back; with
    one event per message, faust's per-message intake is the largest cost.
    Each stage is one task taking batches in order, so commits and acks stay
    in log order. A full queue blocks the stage before it: back-pressure.
    """

    async def prepare_stage(
        inbox: asyncio.Queue[list[Any] | None], outbox: asyncio.Queue[Prepared | None]
    ) -> None:
        while (events := await inbox.get()) is not None:
            messages = [
                Message(e.message.partition, e.message.offset, e.message.value or b"")
                for e in events
            ]
            await prices.refresh()
            book, frame, revision = prices.book, prices.frame, prices.revision
            t0 = time.perf_counter()
            admission = settings.admission(datetime.now(UTC))
            batch = await asyncio.to_thread(
                partial(prepare, energy=settings.joins, caps=prices.caps),
                messages,
                book,
                frame,
                admission,
            )
            stats.prepare_s += time.perf_counter() - t0
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
            await outbox.put(Prepared(events, batch, book, revision))
        await outbox.put(None)

    async def commit_stage(stream: Any, inbox: asyncio.Queue[Prepared | None]) -> None:
        while (p := await inbox.get()) is not None:
            fault_hook("before_commit")
            t0 = time.perf_counter()
            applied = await sink.apply(p.batch, p.book)
            stats.sink_s += time.perf_counter() - t0
            fault_hook("after_commit")
            # A fenced partition's messages were not applied: acking them
            # would let the group commit past them.
            for e in p.events:
                if e.message.partition not in applied.fenced:
                    await stream.ack(e)
            stats.messages += len(p.events)
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

    @app.agent(topics.usage, name="spend")
    async def spend(stream: Any) -> None:
        to_prepare: asyncio.Queue[list[Any] | None] = asyncio.Queue(maxsize=2)
        to_commit: asyncio.Queue[Prepared | None] = asyncio.Queue(maxsize=1)
        stages = [
            asyncio.create_task(_fatal_on_error(prepare_stage(to_prepare, to_commit))),
            asyncio.create_task(_fatal_on_error(commit_stage(stream, to_commit))),
        ]
        try:
            async for events in stream.noack_take(
                settings.batch_messages, within=settings.batch_within_s
            ):
                if stats.first_message_at is None:
                    stats.first_message_at = time.time()
                await to_prepare.put(list(events))
        finally:
            await _wind_down(stages, to_prepare, settings.shutdown_grace_s)


async def _wind_down(
    stages: list[asyncio.Task[None]], inbox: asyncio.Queue[Any], grace_s: float
) -> None:
    """Graceful stop (SIGTERM): let the batches already taken commit and ack,
    for up to ``grace_s``, then cancel the rest. What is cancelled was never
    acked, so it is redelivered; what committed is not re-read."""
    with suppress(TimeoutError):
        await asyncio.wait_for(inbox.put(None), timeout=grace_s)
        done, _ = await asyncio.wait(stages, timeout=grace_s)
        log.info("shutdown: %d of %d stages finished their batches", len(done), len(stages))
    for task in stages:
        task.cancel()


@dataclass(frozen=True)
class Prepared:
    events: list[Any]  # the faust events to ack once committed
    batch: PreparedBatch
    book: PriceBook
    revision: int


async def _fatal_on_error(stage: Awaitable[None]) -> None:
    """A stage that fails for any reason but cancellation takes the process
    down: nothing it held was acked, so a restart redelivers it, whereas a
    stage that died quietly would stall the partitions forever. (Database
    errors never get here: the sink retries them.)"""
    try:
        await stage
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("a pipeline stage failed; exiting so nothing unacked is lost", exc_info=True)
        logging.shutdown()
        os._exit(70)


def stats_json(stats: AgentStats, faults: Mapping[str, int]) -> str:
    """The worker's counters, and the faults it met by kind (see ``fault`` log lines)."""
    return json.dumps({**stats.__dict__, "faults": dict(faults)})
