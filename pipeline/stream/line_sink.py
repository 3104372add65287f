"""A sink for a topic whose lines need no dedup: each message is applied
once by its offset (GPU telemetry, cache events).

``prepare`` is the pure part (decode, validate, sum; it runs in a thread,
outside any transaction) and ``write`` turns its result into table rows
inside the offset transaction of :mod:`pipeline.stream.offsets`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from pipeline.stream.dead_letter import DeadLetter, dead_letter
from pipeline.stream.message import Message, Position, raw_line
from pipeline.stream.offsets import OffsetSink
from pipeline.stream.pg import Conn

B = TypeVar("B")


@dataclass(frozen=True)
class LinesWritten:
    accepted: Counter[int]
    dead: tuple[DeadLetter, ...]
    duplicates: Mapping[int, int] = field(default_factory=dict)  # offsets dedup these topics
    newest: Mapping[int, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class LinesApplied:
    accepted: int = 0
    dead: tuple[DeadLetter, ...] = ()
    fenced: tuple[int, ...] = ()


class LineSink(OffsetSink, Generic[B]):
    def prepare(self, messages: Sequence[Message]) -> B:
        raise NotImplementedError

    def lines_of(self, batch: B) -> list[Position]:
        """Where the lines ``batch`` applies came from."""
        raise NotImplementedError

    def without(self, batch: B, lines: Collection[Position]) -> B:
        """``batch`` as if ``lines`` had not been in it (pure)."""
        raise NotImplementedError

    async def write(self, conn: Conn, batch: B) -> tuple[Counter[int], list[DeadLetter]]:
        raise NotImplementedError

    async def before_commit(self, batch: B) -> None:
        """What must exist before ``batch``'s transaction (its partitions)."""

    async def apply(self, messages: Sequence[Message], prepared: B | None = None) -> LinesApplied:
        """Apply ``messages``; ``prepared`` is ``prepare(messages)`` when the
        caller already ran it (it is used only if every message is fresh)."""
        ready = (
            prepared if prepared is not None else await asyncio.to_thread(self.prepare, messages)
        )
        await self.before_commit(ready)
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for m in messages:
            first[m.partition] = min(m.offset, first.get(m.partition, m.offset))
            last[m.partition] = max(m.offset, last.get(m.partition, -1))
        values = {(m.partition, m.offset): m.value for m in messages}
        fresh_batch: list[B] = []  # the last write's, before any line was refused

        async def write(
            conn: Conn, floor: Mapping[int, int], refused: Mapping[Position, str]
        ) -> LinesWritten:
            fresh = [m for m in messages if m.offset >= floor[m.partition]]
            batch = ready
            if len(fresh) < len(messages):
                # A redelivery or a fenced partition: only the rest counts.
                batch = await asyncio.to_thread(self.prepare, fresh)
            fresh_batch[:] = [batch]
            if refused:
                batch = self.without(batch, refused)
            accepted, dead = await self.write(conn, batch)
            # A new list: the prepared batch's own is written again on a retry.
            refusals = [
                dead_letter(p, o, n, why, raw_line(values[(p, o)], n))
                for (p, o, n), why in sorted(refused.items())
                if why
            ]
            return LinesWritten(accepted, (*dead, *refusals))

        def lines(floor: Mapping[int, int]) -> list[Position]:
            return self.lines_of(fresh_batch[0])

        written, fenced = await self.commit(first, last, write, lines)
        if written is None:
            return LinesApplied(fenced=fenced)
        return LinesApplied(sum(written.accepted.values()), written.dead, fenced)
