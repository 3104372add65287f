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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from models.prices import PriceBook
from pipeline.app import Topics
from pipeline.pricing import book_frame
from pipeline.settings import Settings
from pipeline.spend_batch import prepare
from pipeline.spend_sink import SpendSink
from pipeline.usage_codec import Message

log = logging.getLogger(__name__)


@dataclass
class AgentStats:
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    first_message_at: float | None = None
    last_commit_at: float | None = None
    started_at: float = field(default_factory=time.time)


class PriceBookCache:
    """The worker's snapshot of the price book, refreshed when it changes."""

    def __init__(self, sink: SpendSink, on_change: Callable[[], Any]) -> None:
        self._sink = sink
        self._on_change = on_change
        self.revision = -1
        self.book = PriceBook()
        self.frame = book_frame(self.book)

    async def refresh(self) -> None:
        if await self._sink.price_book_revision() == self.revision:
            return
        self.book, self.revision = await self._sink.price_book()
        self.frame = book_frame(self.book)
        log.info("price book revision %s: %d entries", self.revision, len(self.book))
        await self._on_change()


def attach_spend_agent(
    app: faust.App,
    topics: Topics,
    settings: Settings,
    sink: SpendSink,
    prices: PriceBookCache,
    stats: AgentStats,
    fault_hook: Callable[[str], None] = lambda point: None,
) -> None:
    @app.agent(topics.usage, name="spend")
    async def spend(stream: Any) -> None:
        async for events in stream.noack_take(
            settings.batch_messages, within=settings.batch_within_s
        ):
            if stats.first_message_at is None:
                stats.first_message_at = time.time()
            messages = [
                Message(e.message.partition, e.message.offset, e.message.value or b"")
                for e in events
            ]
            await prices.refresh()
            batch = await asyncio.to_thread(prepare, messages, prices.frame)
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
            fault_hook("before_commit")
            applied = await sink.apply(batch, prices.book)
            fault_hook("after_commit")
            for e in events:
                await stream.ack(e)
            stats.messages += len(messages)
            stats.accepted += applied.accepted
            stats.duplicates += applied.duplicates
            stats.dead_lettered += applied.dead_lettered
            stats.batches += 1
            stats.last_commit_at = time.time()


def stats_json(stats: AgentStats) -> str:
    return json.dumps(stats.__dict__)
