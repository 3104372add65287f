"""How every consumed topic is worked: three stages joined by small bounded
queues, so each overlaps the others.

intake (from the topic's inbox) -> prepare (the pure work; polars in a
thread) -> commit (the sink transaction) -> ack.

A batch closes at ``batch_bytes`` of message values or ``batch_messages``
messages, or when nothing more arrived within ``batch_within_s`` of its
first message: sized by bytes, one-event messages amortize the columnar
path as NDJSON messages do. While a later stage is behind, the intake waits
and fetched runs gather in the inbox, so the next batch takes them at once:
back-pressure makes batches fuller rather than more numerous, and each pays
one transaction.

The fetcher fills the inbox while the previous batches are decoded and
committed (:mod:`pipeline.stream.bulk_intake`). Each stage is one task
taking batches in order, so commits and acks stay in log order. A full queue
blocks the stage before it, down to the fetcher: back-pressure. Nothing is
acked before its commit, and a partition the commit reports fenced (another
worker owns it now) is not acked at all, so the group never commits past
what this worker did not apply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.stream import live_metrics as live
from pipeline.stream.bulk_intake import Inbox
from pipeline.stream.message import Message

log = logging.getLogger(__name__)
T = TypeVar("T")

Prepare = Callable[[list[Message]], Awaitable[T]]
# Applies a prepared batch; returns the partitions it found fenced.
Commit = Callable[[list[Message], T], Awaitable[Collection[int]]]
# A batch's lowest and highest offset in each partition.
_Spans = dict[int, tuple[int, int]]
# Acks a committed batch: each partition's (first, last) offset.
Ack = Callable[[Mapping[int, tuple[int, int]]], None]


# Exit status of a worker whose stage failed (EX_SOFTWARE): nothing it held
# was acked, so a restart redelivers it.
STAGE_FAILED = 70


@dataclass(frozen=True)
class StageConfig:
    """How the stages batch and stop (from ``Settings.stages``)."""

    batch_messages: int = 20_000  # at most this many messages a batch
    batch_within_s: float = 0.3  # the wait that closes a partial batch
    shutdown_grace_s: float = 10.0  # on a stop, how long taken batches may take to commit
    batch_bytes: int = 8_000_000  # at most this many bytes of message values a batch


@dataclass
class StageClock:
    """Where an agent's time went: how long its prepare and commit stages
    were busy (for the stats file and for Prometheus). A stage busy for
    nearly the whole run is the agent's limit."""

    agent: str
    batches: int = 0
    messages: int = 0
    prepare_s: float = 0.0
    commit_s: float = 0.0

    def prepared(self, seconds: float) -> None:
        self.prepare_s += seconds
        live.STAGE_BUSY.labels(self.agent, "prepare").inc(seconds)

    def committed(self, seconds: float, messages: int) -> None:
        self.commit_s += seconds
        self.batches += 1
        self.messages += messages
        live.STAGE_BUSY.labels(self.agent, "commit").inc(seconds)
        live.COMMIT_SECONDS.labels(self.agent).observe(seconds)
        live.BATCHES.labels(self.agent).inc()
        live.BATCH_MESSAGES.labels(self.agent).observe(messages)


@dataclass
class _Batch:
    messages: list[Message] = field(default_factory=list)
    nbytes: int = 0

    def add(self, run: list[Message], nbytes: int) -> None:
        self.messages += run
        self.nbytes += nbytes

    def full(self, config: StageConfig) -> bool:
        return self.nbytes >= config.batch_bytes or len(self.messages) >= config.batch_messages


async def run_stages(
    inbox: Inbox,
    config: StageConfig,
    prepare: Prepare[T],
    commit: Commit[T],
    ack: Ack,
    clock: StageClock,
    on_batch: Callable[[], None] = lambda: None,
) -> None:
    """Consume ``inbox`` in batches through ``prepare`` and ``commit`` (both
    given the batch's messages), acking each batch once it committed;
    ``clock`` adds up each stage's time. Runs until cancelled."""
    to_prepare: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
    to_commit: asyncio.Queue[tuple[list[Message], _Spans, T] | None] = asyncio.Queue(maxsize=1)

    async def preparing() -> None:
        while (batch := await to_prepare.get()) is not None:
            t0 = time.perf_counter()
            messages, spans = _distinct(batch.messages)
            prepared = await prepare(messages)
            clock.prepared(time.perf_counter() - t0)
            await to_commit.put((messages, spans, prepared))
        await to_commit.put(None)

    async def committing() -> None:
        while (item := await to_commit.get()) is not None:
            messages, spans, prepared = item
            t0 = time.perf_counter()
            fenced = await commit(messages, prepared)
            clock.committed(time.perf_counter() - t0, len(messages))
            ack({p: span for p, span in spans.items() if p not in fenced})

    stages = [
        asyncio.create_task(_fatal_on_error(preparing())),
        asyncio.create_task(_fatal_on_error(committing())),
    ]
    try:
        while True:
            await to_prepare.put(await _take(inbox, config))
            on_batch()
    finally:
        await _wind_down(stages, to_prepare, config.shutdown_grace_s)


async def _take(inbox: Inbox, config: StageConfig) -> _Batch:
    """The next batch: waits for a first run of messages, then takes what
    arrives until the batch is full or ``batch_within_s`` passed. A run
    that would overfill the batch is split, its rest left in the inbox (one
    partition's fetch can hold more than a batch: fetch sizes count
    compressed bytes)."""
    batch = _Batch()
    first = await inbox.get()
    assert first is not None  # no timeout: get waits for a run
    deadline = time.monotonic() + config.batch_within_s
    run: tuple[list[Message], int] | None = first
    while run is not None:
        messages, nbytes = run
        bytes_room = config.batch_bytes - batch.nbytes
        messages_room = config.batch_messages - len(batch.messages)
        if nbytes <= bytes_room and len(messages) <= messages_room:
            batch.add(messages, nbytes)
        else:
            head, size = _head(messages, bytes_room, messages_room)
            batch.add(messages[:head], size)
            if head < len(messages):
                inbox.unget(messages[head:], nbytes - size)
        if batch.full(config):
            break
        run = inbox.get_nowait() or await inbox.get(timeout=deadline - time.monotonic())
    return batch


def _head(messages: list[Message], max_bytes: int, max_messages: int) -> tuple[int, int]:
    """How many messages of a run fit ``max_bytes`` and ``max_messages``, and
    their bytes; at least one, so a batch always takes something."""
    n, size = 0, 0
    while n < min(len(messages), max_messages) and (
        n == 0 or size + len(messages[n].value) <= max_bytes
    ):
        size += len(messages[n].value)
        n += 1
    return n, size


def _distinct(messages: list[Message]) -> tuple[list[Message], _Spans]:
    """The batch's messages, each position once, and each partition's lowest
    and highest offset (one pass: it runs per message on the event loop).

    After a rebalance the consumer seeks back to the group's committed
    offset, so a message still queued here can arrive again and be merged
    into the same batch: a second copy of one message is not a second event
    (it would count as a duplicate), and the offset transaction skips only
    what earlier batches applied. The span covers every message of its range
    the fetcher read (a seek back adds lower offsets after higher ones)."""
    seen: set[tuple[int, int]] = set()
    distinct = []
    spans: _Spans = {}
    for m in messages:
        if (m.partition, m.offset) not in seen:
            seen.add((m.partition, m.offset))
            distinct.append(m)
            first, last = spans.get(m.partition, (m.offset, m.offset))
            spans[m.partition] = (min(first, m.offset), max(last, m.offset))
    return distinct, spans


async def _wind_down(
    stages: list[asyncio.Task[None]], to_prepare: asyncio.Queue[Any], grace_s: float
) -> None:
    """Graceful stop (SIGTERM): let the batches already taken commit and ack,
    for up to ``grace_s``, then cancel the rest. What is cancelled was never
    acked, so it is redelivered; what committed is not re-read."""
    with suppress(TimeoutError):
        await asyncio.wait_for(to_prepare.put(None), timeout=grace_s)
        done, _ = await asyncio.wait(stages, timeout=grace_s)
        log.info("shutdown: %d of %d stages finished their batches", len(done), len(stages))
    for task in stages:
        task.cancel()


async def _fatal_on_error(stage: Awaitable[None]) -> None:
    """A stage that fails for any reason but cancellation takes the process
    down: nothing it held was acked, so a restart redelivers it, whereas a
    stage that died quietly would stall the partitions forever. (Database
    errors never get here: the sinks retry them.)"""
    try:
        await stage
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.critical("a pipeline stage failed; exiting so nothing unacked is lost", exc_info=True)
        logging.shutdown()
        os._exit(STAGE_FAILED)
