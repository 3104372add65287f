"""Publish events the way our producers do: NDJSON messages batched per key.

Events of one node_id share a message (up to ``events_per_message`` lines or
``max_message_bytes``), so the stream processes batches, not single events.
``events_per_message=1`` gives one event per message, as simple gateways send.
Batches are compressed with the codec the caller names (``compression``,
from the settings: lz4 by default). Producers run without idempotence (the
embedded broker refuses InitProducerId); a re-sent message is harmless because the pipeline dedups
by (tenant, node_id, event_id).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from pipeline.stream.kafka import bootstrap

log = logging.getLogger(__name__)
_NODE_ID: Final = re.compile(rb'"node_id"\s*:\s*"((?:[^"\\]|\\.)*)"')
UNKEYED: Final = b"unkeyed"
_TOO_LARGE: Final = (MessageSizeTooLargeError, RecordTooLargeError)


def key_of(line: bytes) -> bytes:
    """The node_id of an event line, read without parsing the whole line; a
    line without one (bad input) still gets published, under UNKEYED."""
    m = _NODE_ID.search(line)
    return m.group(1) if m else UNKEYED


def request_limit(max_message_bytes: int) -> int:
    """The largest request a producer of ours sends: room for a line larger
    than the pipeline's message limit, published alone so the worker
    dead-letters it (too_large) with its place."""
    return max(max_message_bytes * 2, 1024**2)


def new_producer(
    kafka_url: str, max_message_bytes: int, compression: str | None
) -> AIOKafkaProducer:
    """The one shape of every producer of ours: acks from every replica, no
    idempotence (the embedded broker refuses InitProducerId; the pipeline
    dedups a re-sent message), a short linger, and batches that hold a
    whole NDJSON message."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap(kafka_url),
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        compression_type=compression,
        max_request_size=request_limit(max_message_bytes),
        max_batch_size=max(max_message_bytes + 1024, 16384),
    )


@dataclass(frozen=True)
class PublishResult:
    events: int  # lines published
    messages: int
    refused: int = 0  # lines larger than any request the broker takes: not published


class BatchingPublisher:
    def __init__(
        self,
        kafka_url: str,
        topic: str,
        *,
        events_per_message: int,
        max_message_bytes: int,
        compression: str | None,
        on_progress: Callable[[int], None] | None = None,
        in_flight: int = 2000,
        retry_for_s: float = 300.0,
    ) -> None:
        self._url = kafka_url
        self._topic = topic
        self._per_message = events_per_message
        self._max_bytes = max_message_bytes
        self._on_progress = on_progress or (lambda n: None)
        self._compression = compression
        self._in_flight = in_flight
        self._retry_for_s = retry_for_s

    async def publish(self, lines: Iterable[bytes]) -> PublishResult:
        # A line beyond any request the client sends is counted, not published.
        limit = request_limit(self._max_bytes)
        producer = new_producer(self._url, self._max_bytes, self._compression)
        await producer.start()
        pending: list[tuple[asyncio.Future[object], bytes, bytes]] = []
        buffers: dict[bytes, tuple[list[bytes], int]] = {}
        events = messages = refused = 0

        async def settle() -> None:
            """Wait for every send in flight; re-send the failed ones with
            backoff. A send that failed may still have been written, so a
            re-send can duplicate a message: the pipeline's dedup absorbs it,
            while giving up would lose it."""
            delay, deadline = 0.5, time.monotonic() + self._retry_for_s
            while pending:
                results = await asyncio.gather(*(f for f, _, _ in pending), return_exceptions=True)
                failed = []
                for (_, key, value), r in zip(pending, results, strict=True):
                    if isinstance(r, _TOO_LARGE):
                        # Refused by size: the same every time, so counted
                        # and left out, never retried.
                        count_refused(value, sent=True)
                    elif isinstance(r, Exception):
                        failed.append((key, value))
                pending.clear()
                if not failed:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(failed)} messages not acknowledged by the broker")
                log.warning("fault publish_failed: re-sending %d messages", len(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                for key, value in failed:
                    pending.append((await producer.send(self._topic, value, key=key), key, value))

        def count_refused(value: bytes, sent: bool = False) -> None:
            nonlocal refused, events, messages
            lines = value.count(b"\n") + 1
            refused, events = refused + lines, events - lines
            messages -= sent
            log.warning(
                "fault publish_too_large: %d lines in %d bytes not published (the broker's"
                " request limit)",
                lines,
                len(value),
            )

        async def send(key: bytes, chunk: list[bytes]) -> None:
            nonlocal messages
            value = b"\n".join(chunk)
            if len(value) > limit:
                count_refused(value)
                return
            pending.append((await producer.send(self._topic, value, key=key), key, value))
            messages += 1
            if len(pending) >= self._in_flight:
                await settle()

        try:
            for line in lines:
                key = key_of(line)
                chunk, size = buffers.get(key, ([], 0))
                if chunk and size + len(line) + 1 > self._max_bytes:
                    await send(key, chunk)
                    chunk, size = [], 0
                if len(line) >= self._max_bytes:  # alone, never beside others
                    buffers[key] = (chunk, size)
                    events += 1
                    await send(key, [line])
                    continue
                chunk.append(line)
                size += len(line) + 1
                events += 1
                if len(chunk) >= self._per_message:
                    await send(key, chunk)
                    chunk, size = [], 0
                    self._on_progress(events)
                buffers[key] = (chunk, size)
            for key, (chunk, _) in buffers.items():
                if chunk:
                    await send(key, chunk)
            await settle()
            self._on_progress(events)
        finally:
            await producer.stop()
        return PublishResult(events, messages, refused)
