"""Agents for the topics joined with usage: GPU telemetry and cache events.

Thin, like the spend agent, and staged the same way
(:func:`pipeline.stages.run_stages`): the sink's pure ``prepare`` runs in a
thread while the previous batch commits, then the sink applies the batch in
one transaction with its offsets, the dead letters are published, and the
batch is acked. The ``dead_letter`` table is the authority for these topics'
rejected lines; the copy on the dead-letter topic is published after the
commit (a crash in between can miss that copy, never the table row).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from pipeline.settings import Settings
from pipeline.stream.ndjson import Message
from pipeline.stream.offsets import LineSink
from pipeline.stream.stages import StageClock, run_stages


def attach_line_agent(
    app: faust.App,
    name: str,
    topic: Any,
    dlq: Any,
    sink: LineSink[Any],
    settings: Settings,
    clock: StageClock,
) -> None:
    async def prepare(messages: list[Message]) -> Any:
        return await asyncio.to_thread(sink.prepare, messages)

    async def commit(messages: list[Message], prepared: Any) -> tuple[int, ...]:
        applied = await sink.apply(messages, prepared)
        for d in applied.dead:
            await dlq.send(
                key=str(d.partition).encode(),
                value=d.raw,
                headers={"reason": d.reason.encode()},
            )
        return applied.fenced

    @app.agent(topic, name=name)
    async def agent(stream: Any) -> None:
        await run_stages(stream, settings, prepare, commit, clock)
