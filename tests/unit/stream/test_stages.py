"""The staged consumer (pipeline.stream.stages) with an in-memory stream: every event
is acked once, after its batch committed, in log order; batches that queue
up behind a slow commit are merged, never beyond twice the batch size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass

from pipeline.stream.message import Message
from pipeline.stream.stages import StageClock, StageConfig, run_stages


@dataclass(frozen=True)
class _Event:
    message: Message  # the fields run_stages reads of a faust message


class _Stream:
    """What run_stages needs of a faust stream: noack_take and ack."""

    def __init__(self, chunks: Sequence[int]) -> None:
        self._chunks = chunks
        self.acked: list[int] = []

    async def noack_take(self, n: int, within: float) -> AsyncIterator[list[_Event]]:
        offset = 0
        for size in self._chunks:
            assert size <= n
            yield [_Event(Message(0, offset + i, b"{}")) for i in range(size)]
            offset += size
            await asyncio.sleep(0)

    async def ack(self, event: _Event) -> None:
        self.acked.append(event.message.offset)


def _run(chunks: list[int], commit_delay_s: float) -> tuple[list[int], list[int], StageClock]:
    stream = _Stream(chunks)
    prepared: list[int] = []
    committed: list[int] = []

    async def prepare(messages: list[Message]) -> int:
        prepared.append(len(messages))
        return len(messages)

    async def commit(messages: list[Message], n: int) -> Collection[int]:
        await asyncio.sleep(commit_delay_s)
        # Nothing of a batch is acked before its commit returns.
        assert stream.acked == list(range(sum(committed)))
        committed.append(n)
        return ()

    config = StageConfig(batch_messages=10, batch_within_s=0.01, shutdown_grace_s=5)
    clock = StageClock("test")
    asyncio.run(run_stages(stream, config, prepare, commit, clock))
    assert stream.acked == list(range(sum(chunks)))
    assert committed == prepared
    return prepared, stream.acked, clock


def test_short_batches_queued_behind_a_slow_commit_are_merged() -> None:
    chunks = [3] * 12
    prepared, _, clock = _run(chunks, commit_delay_s=0.05)
    assert sum(prepared) == 36
    assert len(prepared) < len(chunks)
    assert max(prepared) <= 2 * 10
    assert clock.batches == len(prepared) and clock.messages == 36


def test_full_batches_are_not_merged_and_a_fast_pipeline_keeps_the_intake_batches() -> None:
    full, _, _ = _run([10] * 5, commit_delay_s=0.05)
    assert full == [10] * 5
    fast, _, _ = _run([3, 4, 5], commit_delay_s=0)
    assert sum(fast) == 12 and max(fast) <= 20


class _SeekingBackStream(_Stream):
    """A stream whose consumer seeks back after a rebalance: offsets taken
    but not yet acked arrive a second time, behind their first copies."""

    async def noack_take(self, n: int, within: float) -> AsyncIterator[list[_Event]]:
        for offsets in ([0], [1], [2], [3, 4], [3, 4, 5], [6]):
            yield [_Event(Message(0, o, b"{}")) for o in offsets]
            await asyncio.sleep(0)


def test_a_message_delivered_twice_into_one_batch_is_prepared_once() -> None:
    stream = _SeekingBackStream([])
    prepared: list[list[int]] = []

    async def prepare(messages: list[Message]) -> None:
        prepared.append([m.offset for m in messages])

    async def commit(messages: list[Message], _: None) -> Collection[int]:
        await asyncio.sleep(0.05)  # slow, so the intake's batches queue up and merge
        return ()

    config = StageConfig(batch_messages=10, batch_within_s=0.01, shutdown_grace_s=5)
    asyncio.run(run_stages(stream, config, prepare, commit, StageClock("test")))
    assert len(prepared) < 6, "the batches were expected to merge"
    assert all(len(batch) == len(set(batch)) for batch in prepared), prepared
    assert sorted({o for batch in prepared for o in batch}) == list(range(7))
    assert set(stream.acked) == set(range(7))
