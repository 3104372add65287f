"""Agents for the topics joined with usage: GPU telemetry and cache events.

Thin, like the spend agent: take a batch without acking, let the sink apply
it in one transaction with its offsets, publish its dead letters, then ack.
These topics carry little volume (a sample per GPU per scrape, a few cache
events per call), so one stage is enough. The ``dead_letter`` table is the
authority for their rejected lines; the copy on the dead-letter topic is
published after the commit (a crash in between can miss that copy, never
the table row).
"""

from __future__ import annotations

from typing import Any

import faust

from pipeline.ndjson_codec import Message
from pipeline.offset_sink import LineSink
from pipeline.settings import Settings


def attach_line_agent(
    app: faust.App, name: str, topic: Any, dlq: Any, sink: LineSink, settings: Settings
) -> None:
    @app.agent(topic, name=name)
    async def agent(stream: Any) -> None:
        async for events in stream.noack_take(
            settings.batch_messages, within=settings.batch_within_s
        ):
            messages = [
                Message(e.message.partition, e.message.offset, e.message.value or b"")
                for e in events
            ]
            applied = await sink.apply(messages)
            for d in applied.dead:
                await dlq.send(
                    key=str(d.partition).encode(),
                    value=d.raw,
                    headers={"reason": d.reason.encode()},
                )
            for e in events:
                if e.message.partition not in applied.fenced:
                    await stream.ack(e)
