"""The agents: thin, on purpose. Each consumes its topic's inbox
(:mod:`pipeline.stream.bulk_intake`) through
:func:`pipeline.stream.stages.run_stages`: the pure work of a batch runs in a
thread (polars releases the GIL, so faust keeps fetching meanwhile), the sink
commits it in the offset transaction, which publishes its dead letters to
the topic's dead-letter topic before COMMIT (:mod:`pipeline.stream.dead_letter`),
and only then is the batch acked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from models.prices import PriceBook
from pipeline.settings import Settings
from pipeline.spend.batch import PreparedBatch, prepare
from pipeline.spend.reference import ReferenceData
from pipeline.spend.sink import SpendSink
from pipeline.stream import live_metrics as live
from pipeline.stream.bulk_intake import BulkApp
from pipeline.stream.dead_letter import DeadLetter, PublishDead, headers
from pipeline.stream.line_sink import LineSink
from pipeline.stream.message import Message
from pipeline.stream.stages import Commit, Prepare, StageClock, run_stages
from pipeline.worker.stats import AgentStats

T = TypeVar("T")


def dead_letter_topic(topic: Any) -> PublishDead:
    """Publishes dead letters to ``topic`` and waits for the broker's acks."""

    async def publish(dead: Sequence[DeadLetter]) -> None:
        sent = [
            await topic.send(key=str(d.partition).encode(), value=d.raw, headers=headers(d))
            for d in dead
        ]
        await asyncio.gather(*sent)

    return publish


@dataclass(frozen=True)
class _Prepared:
    batch: PreparedBatch
    book: PriceBook
    revision: int


def _consume(
    app: BulkApp,
    topic: Any,
    settings: Settings,
    prepare: Prepare[T],
    commit: Commit[T],
    clock: StageClock,
    on_batch: Callable[[], None] = lambda: None,
) -> None:
    """Runs the stages on ``topic``'s inbox for as long as the app runs."""
    inbox = app.inbox(topic, max_bytes=settings.batch_bytes)
    ack = partial(app.ack_through, inbox.topic)

    async def agent() -> None:
        await run_stages(inbox, settings.stages, prepare, commit, ack, clock, on_batch)

    app.task(agent)


def attach_spend_agent(
    app: BulkApp,
    topic: Any,
    settings: Settings,
    sink: SpendSink,
    reference: ReferenceData,
    stats: AgentStats,
    fault_hook: Callable[[str], None] = lambda point: None,
) -> None:
    """The usage topic: prepare decodes, prices and sums a batch in a thread;
    commit applies it in the sink's transaction."""

    async def prepare_batch(messages: list[Message]) -> _Prepared:
        await reference.refresh()
        book, frame, revision = reference.book, reference.frame, reference.revision
        batch = await asyncio.to_thread(
            partial(prepare, energy=settings.joins, caps=reference.caps),
            messages,
            book,
            frame,
            settings.admission(datetime.now(UTC)),
        )
        return _Prepared(batch, book, revision)

    async def commit_batch(messages: list[Message], p: _Prepared) -> tuple[int, ...]:
        fault_hook("before_commit")
        applied = await sink.apply(p.batch, p.book)
        fault_hook("after_commit")
        if applied.accepted:
            live.FRESHNESS.observe_many(
                sink.topic, live.event_ages(p.batch.events["ts"], datetime.now(UTC))
            )
        stats.messages += len(messages)
        stats.accepted += applied.accepted
        stats.duplicates += applied.duplicates
        stats.dead_lettered += applied.dead_lettered
        stats.conflicts += applied.conflicts
        stats.fenced_batches += bool(applied.fenced)
        stats.batches += 1
        stats.last_commit_at = time.time()
        if p.revision < reference.revision and p.batch.events["price_id"].null_count():
            # Priced with an older book than the current one: its unpriced
            # events may have missed the reprice the new book triggered.
            await reference.reprice()
        return applied.fenced

    def first_batch() -> None:
        if stats.first_message_at is None:
            stats.first_message_at = time.time()

    clock = stats.stages.setdefault("spend", StageClock("spend"))
    _consume(app, topic, settings, prepare_batch, commit_batch, clock, first_batch)


def attach_line_agent(
    app: BulkApp,
    topic: Any,
    sink: LineSink[Any],
    settings: Settings,
    clock: StageClock,
) -> None:
    """A joined topic (telemetry, cache events): the sink's pure ``prepare``
    in a thread, then its transaction."""

    async def prepare_batch(messages: list[Message]) -> Any:
        return await asyncio.to_thread(sink.prepare, messages)

    async def commit_batch(messages: list[Message], prepared: Any) -> tuple[int, ...]:
        return (await sink.apply(messages, prepared)).fenced

    _consume(app, topic, settings, prepare_batch, commit_batch, clock)
