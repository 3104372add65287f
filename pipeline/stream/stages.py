"""How every agent of this pipeline consumes its topic: three stages joined
by small bounded queues, so each overlaps the others.

intake (the agent loop) -> prepare (the pure work; polars in a thread)
-> commit (the sink transaction) -> ack.

Batches queued for the prepare stage are merged (up to twice the batch
size), so back-pressure makes batches fuller rather than more numerous.

``noack_take`` refills its buffer only when the loop asks for the next batch,
so the loop hands a batch over and comes straight back: faust's per-message
intake is the largest cost of small messages, and it now runs while the
previous batches are decoded and committed. Each stage is one task taking
batches in order, so commits and acks stay in log order. A full queue blocks
the stage before it: back-pressure. Nothing is acked before its commit, and a
partition the commit reports fenced (another worker owns it now) is not acked
at all, so the group never commits past what this worker did not apply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.stream import live_metrics as live
from pipeline.stream.message import Message

log = logging.getLogger(__name__)
T = TypeVar("T")

Prepare = Callable[[list[Message]], Awaitable[T]]
# Applies a prepared batch; returns the partitions it found fenced.
Commit = Callable[[list[Message], T], Awaitable[Collection[int]]]


# Exit status of a worker whose stage failed (EX_SOFTWARE): nothing it held
# was acked, so a restart redelivers it.
STAGE_FAILED = 70


@dataclass(frozen=True)
class StageConfig:
    """How the stages batch and stop (from ``Settings.stages``)."""

    batch_messages: int = 400  # messages per batch the intake takes
    batch_within_s: float = 0.3  # the wait that closes a partial batch
    shutdown_grace_s: float = 10.0  # on a stop, how long taken batches may take to commit


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


async def run_stages(
    stream: Any,
    config: StageConfig,
    prepare: Prepare[T],
    commit: Commit[T],
    clock: StageClock,
    on_batch: Callable[[], None] = lambda: None,
) -> None:
    """Consume ``stream`` in batches of ``config.batch_messages`` through
    ``prepare`` and ``commit`` (both given the batch's messages), acking each
    event once its batch committed; ``clock`` adds up each stage's time."""
    to_prepare: asyncio.Queue[list[Any] | None] = asyncio.Queue(maxsize=2)
    to_commit: asyncio.Queue[tuple[list[Any], list[Message], T] | None] = asyncio.Queue(maxsize=1)

    async def preparing() -> None:
        ended = False
        while not ended and (events := await to_prepare.get()) is not None:
            # When a later stage falls behind, the intake's batches queue up
            # here (often short ones, cut by ``batch_within_s``): take the
            # queued ones along, up to twice the batch size, so a busy stage
            # meets fewer, fuller batches instead of paying its per-batch
            # cost (a transaction and its fixed statements) for each.
            while len(events) < config.batch_messages and not to_prepare.empty():
                more = to_prepare.get_nowait()
                if more is None:
                    ended = True
                    break
                events += more
            t0 = time.perf_counter()
            messages = _distinct(events)
            prepared = await prepare(messages)
            clock.prepared(time.perf_counter() - t0)
            await to_commit.put((events, messages, prepared))
        await to_commit.put(None)

    async def committing() -> None:
        while (item := await to_commit.get()) is not None:
            events, messages, batch = item
            t0 = time.perf_counter()
            fenced = await commit(messages, batch)
            clock.committed(time.perf_counter() - t0, len(messages))
            for e in events:
                if e.message.partition not in fenced:
                    await stream.ack(e)

    stages = [
        asyncio.create_task(_fatal_on_error(preparing())),
        asyncio.create_task(_fatal_on_error(committing())),
    ]
    try:
        async for events in stream.noack_take(config.batch_messages, within=config.batch_within_s):
            on_batch()
            await to_prepare.put(list(events))
    finally:
        await _wind_down(stages, to_prepare, config.shutdown_grace_s)


def _distinct(events: list[Any]) -> list[Message]:
    """The batch's messages, each position once. After a rebalance the
    consumer seeks back to the group's committed offset, so a message still
    queued here can arrive again and be merged into the same batch: a second
    copy of one message is not a second event (it would count as a
    duplicate), and the offset transaction skips only what earlier batches
    applied."""
    seen: set[tuple[int, int]] = set()
    messages = []
    for e in events:
        m = e.message
        if (m.partition, m.offset) not in seen:
            seen.add((m.partition, m.offset))
            messages.append(Message(m.partition, m.offset, m.value or b""))
    return messages


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
