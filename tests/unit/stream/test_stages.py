"""The staged consumer (pipeline.stream.stages) on an inbox fed in memory:
every message is acked once, after its batch committed, in log order;
batches close at their byte and message bounds or when nothing more came
within the wait; behind a slow commit the runs gather into fuller batches,
never beyond the bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress

from pipeline.stream.bulk_intake import Inbox
from pipeline.stream.message import Message
from pipeline.stream.stages import StageClock, StageConfig, run_stages

CONFIG = StageConfig(batch_messages=10, batch_within_s=0.01, shutdown_grace_s=5, batch_bytes=10**9)


class _Feed:
    """Puts runs of messages into an inbox as a fetcher would, and records
    what the stages ack."""

    def __init__(self, runs: Sequence[Sequence[int]], gap_s: float = 0.0) -> None:
        self.runs = runs
        self.gap_s = gap_s
        self.acked: list[int] = []
        self.inbox = Inbox("t", max_bytes=10**9)

    async def feed(self) -> None:
        for offsets in self.runs:
            run = [Message(0, o, b"{}") for o in offsets]
            await self.inbox.put(run, 2 * len(run))
            await asyncio.sleep(self.gap_s)

    def ack(self, spans: Mapping[int, tuple[int, int]]) -> None:
        if 0 in spans:
            first, last = spans[0]
            self.acked += [o for o in range(first, last + 1) if o not in self.acked]


def _run(
    feed: _Feed, config: StageConfig = CONFIG, commit_delay_s: float = 0.0
) -> tuple[list[list[int]], StageClock]:
    prepared: list[list[int]] = []
    committed: list[int] = []
    done: set[int] = set()  # the offsets of the batches committed so far
    acked_early: list[set[int]] = []
    total = len({o for run in feed.runs for o in run})

    async def prepare(messages: list[Message]) -> int:
        prepared.append([m.offset for m in messages])
        return len(messages)

    async def commit(messages: list[Message], n: int) -> Collection[int]:
        await asyncio.sleep(commit_delay_s)
        # Nothing is acked before the commit of its batch returns. (Noted,
        # not asserted here: a failing stage ends the process.)
        if set(feed.acked) != done:
            acked_early.append(set(feed.acked) - done)
        done.update(m.offset for m in messages)
        committed.append(n)
        return ()

    clock = StageClock("test")

    async def main() -> None:
        stages = asyncio.create_task(
            run_stages(feed.inbox, config, prepare, commit, feed.ack, clock)
        )
        await feed.feed()
        async with asyncio.timeout(10):
            while len(feed.acked) < total:
                await asyncio.sleep(0.005)
        stages.cancel()
        with suppress(asyncio.CancelledError):
            await stages

    asyncio.run(main())
    assert acked_early == []
    assert feed.acked == sorted(feed.acked)
    assert [len(p) for p in prepared] == committed
    return prepared, clock


def _runs(sizes: Sequence[int]) -> list[list[int]]:
    runs, offset = [], 0
    for n in sizes:
        runs.append(list(range(offset, offset + n)))
        offset += n
    return runs


def test_a_batch_closes_at_its_message_bound_and_every_message_is_acked_once() -> None:
    feed = _Feed(_runs([4] * 10))
    prepared, clock = _run(feed)
    assert feed.acked == list(range(40))
    assert all(len(p) <= 10 for p in prepared)
    assert clock.batches == len(prepared) and clock.messages == 40


def test_a_batch_closes_at_its_byte_bound() -> None:
    feed = _Feed(_runs([3] * 8))
    by_bytes = StageConfig(
        batch_messages=10**6, batch_within_s=1.0, shutdown_grace_s=5, batch_bytes=12
    )
    prepared, _ = _run(feed, by_bytes)
    # 2 bytes a message: a batch closes at 12 bytes, two runs of three.
    assert [len(p) for p in prepared] == [6, 6, 6, 6]


def test_a_run_larger_than_a_batch_is_split_and_its_rest_comes_next() -> None:
    # One partition's fetch can hold more than a batch (fetch sizes count
    # compressed bytes): the batch takes what fits, the rest stays in order.
    feed = _Feed([list(range(10))])
    by_bytes = StageConfig(
        batch_messages=10**6, batch_within_s=0.5, shutdown_grace_s=5, batch_bytes=6
    )
    prepared, _ = _run(feed, by_bytes)
    assert prepared == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    by_messages = StageConfig(
        batch_messages=4, batch_within_s=0.5, shutdown_grace_s=5, batch_bytes=10**9
    )
    prepared, _ = _run(_Feed([list(range(10))]), by_messages)
    assert prepared == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_partial_batch_closes_when_nothing_more_arrives_within_the_wait() -> None:
    # Far apart, then idle: each run is a batch of its own, and the last one
    # does not wait for a fuller batch that never comes (a drain ends).
    feed = _Feed(_runs([2, 3, 1]), gap_s=0.1)
    prepared, _ = _run(feed)
    assert [len(p) for p in prepared] == [2, 3, 1]


def test_behind_a_slow_commit_runs_gather_into_fuller_batches_within_the_bound() -> None:
    feed = _Feed(_runs([3] * 12), gap_s=0.02)
    prepared, _ = _run(feed, commit_delay_s=0.1)
    assert sum(len(p) for p in prepared) == 36
    assert len(prepared) < 12
    assert max(len(p) for p in prepared) <= 10


def test_a_message_delivered_twice_into_one_batch_is_prepared_once() -> None:
    # A rebalance seeks back to the committed offset: offsets taken but not
    # yet acked arrive a second time, behind their first copies.
    feed = _Feed([[0], [1], [2], [3, 4], [3, 4, 5], [6]])
    prepared, _ = _run(feed, commit_delay_s=0.1)
    assert any(3 in batch and 5 in batch for batch in prepared), prepared  # both copies met
    assert all(len(batch) == len(set(batch)) for batch in prepared), prepared
    assert sorted({o for batch in prepared for o in batch}) == list(range(7))
    assert feed.acked == list(range(7))


def test_a_fenced_partition_is_not_acked() -> None:
    inbox = Inbox("t", max_bytes=10**9)
    acks: list[Mapping[int, tuple[int, int]]] = []

    async def prepare(messages: list[Message]) -> None:
        return None

    async def commit(messages: list[Message], _: None) -> Collection[int]:
        return (1,)

    async def main() -> None:
        stages = asyncio.create_task(
            run_stages(inbox, CONFIG, prepare, commit, acks.append, StageClock("t"))
        )
        await inbox.put([Message(0, 5, b"a"), Message(1, 9, b"b"), Message(0, 6, b"c")], 3)
        async with asyncio.timeout(5):
            while not acks:
                await asyncio.sleep(0.005)
        stages.cancel()
        with suppress(asyncio.CancelledError):
            await stages

    asyncio.run(main())
    assert acks == [{0: (5, 6)}]


def test_the_inbox_holds_back_its_writer_when_full_and_drops_revoked_partitions() -> None:
    async def main() -> None:
        inbox = Inbox("t", max_bytes=10)
        await inbox.put([Message(0, 0, b"x" * 6)], 6)
        await inbox.put([Message(1, 0, b"y" * 6)], 6)  # over the bound: let in
        blocked = asyncio.create_task(inbox.put([Message(0, 1, b"z")], 1))
        await asyncio.sleep(0.01)
        assert not blocked.done() and inbox.full
        assert inbox.drop([1]) == 1
        await asyncio.wait_for(blocked, 1)
        assert inbox.nbytes == 7
        got = [inbox.get_nowait(), inbox.get_nowait(), inbox.get_nowait()]
        assert [r[0][0].offset if r else None for r in got] == [0, 1, None]
        assert await inbox.get(timeout=0.01) is None

    asyncio.run(main())
