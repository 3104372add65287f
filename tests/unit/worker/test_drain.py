"""The drain watcher and the exit-code protocol, without a process: fake
sinks report their offsets, a fake clock moves time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest

from pipeline.worker.drain import SLOW_POLL_S, DrainProgress, drain
from pipeline.worker.process import exit_code
from pipeline.worker.stop_signal import DRAIN_UNFINISHED

TARGETS = [{0: 10, 1: 5}, {0: 3}]


def test_caught_up_only_when_every_sink_reached_every_partitions_end() -> None:
    progress = DrainProgress(TARGETS, stall_s=60)
    assert progress.step([{0: 10, 1: 4}, {0: 3}], 0, 0) == "going"
    assert progress.step([{0: 10}, {0: 3}], 1, 1) == "going"  # a partition never applied
    assert progress.step([{0: 10, 1: 5}, {0: 3}], 2, 2) == "done"
    assert progress.step([{0: 11, 1: 9}, {0: 4}], 3, 3) == "done"  # past the snapshot


def test_no_progress_for_the_stall_limit_is_a_stall_and_any_progress_resets_it() -> None:
    progress = DrainProgress(TARGETS, stall_s=60)
    stuck = [{0: 1, 1: 0}, {0: 0}]
    assert progress.step(stuck, 0, 0) == "going"
    assert progress.step(stuck, 59, 59) == "going"
    moved = [{0: 2, 1: 0}, {0: 0}]
    assert progress.step(moved, 59.5, 59.5) == "going"
    assert progress.step(moved, 119, 119) == "going"
    assert progress.step(moved, 120, 120) == "stalled"


def test_a_poll_that_waited_for_the_database_counts_as_progress() -> None:
    """The sinks wait out a PostgreSQL outage by design: a drain that waited
    for its own poll is not stalled by that wait."""
    progress = DrainProgress(TARGETS, stall_s=60)
    stuck = [{0: 1, 1: 0}, {0: 0}]
    progress.step(stuck, 0, 0)
    assert progress.step(stuck, 50, 50 + SLOW_POLL_S + 1) == "going"
    assert progress.step(stuck, 100, 100) == "going"
    assert progress.step(stuck, 117, 117) == "stalled"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reader(
    offsets: Iterator[dict[int, int]], clock: _Clock
) -> Callable[[], Awaitable[dict[int, int]]]:
    async def read() -> dict[int, int]:
        clock.now += 1
        return next(offsets)

    return read


def test_drain_finishes_after_catching_up_and_reports_a_failed_finish() -> None:
    clock = _Clock()
    finished: list[bool] = []

    async def finish(ok: bool) -> bool:
        finished.append(ok)
        return ok

    for ok in (True, False):
        spend = iter([{0: 3, 1: 5}, {0: 10, 1: 5}])
        side = iter([{0: 0}, {0: 3}])
        end = asyncio.run(
            drain(
                [_reader(spend, clock), _reader(side, clock)],
                DrainProgress(TARGETS, stall_s=600),
                lambda ok=ok: finish(ok),
                clock=clock,
                poll_s=0,
            )
        )
        assert end.drained is ok
        assert end.why == ("" if ok else "the energy split kept failing")
    assert finished == [True, False]


def test_drain_stalls_when_nothing_moves() -> None:
    clock = _Clock()

    def forever() -> Iterator[dict[int, int]]:
        while True:
            yield {0: 1}

    async def never() -> bool:
        raise AssertionError("a stalled drain does not finish")

    end = asyncio.run(
        drain(
            [_reader(forever(), clock)],
            DrainProgress([{0: 2}], stall_s=30),
            never,
            clock=clock,
            poll_s=0,
        )
    )
    assert (end.drained, end.why) == (False, "no sink advanced")
    assert 30 < clock.now < 40


@pytest.mark.parametrize(
    ("drain_", "drained", "faust_code", "expected"),
    [
        (False, False, 0, 0),  # a service worker stopped cleanly
        (False, False, 70, 70),
        (True, True, 0, 0),  # caught up
        (True, False, 0, DRAIN_UNFINISHED),  # stalled or told to stop
        (True, False, 70, 70),  # a failure keeps its own code
        (True, True, 1, 1),
    ],
)
def test_a_drain_exits_0_only_when_it_caught_up(
    drain_: bool, drained: bool, faust_code: int, expected: int
) -> None:
    assert exit_code(drain=drain_, drained=drained, faust_code=faust_code) == expected
