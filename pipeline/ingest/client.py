"""``UsagePublisher``: a small client for gateways we have no door for.

Call :meth:`UsagePublisher.publish` with one usage event per model-call
attempt; it returns at once. A background thread packs events into NDJSON
messages per node key (:class:`pipeline.stream.ack_batcher.AckBatcher`) and
publishes them to the usage topic, re-sending with backoff while the broker
is away. Memory is bounded: at most ``max_buffered`` events wait for the
broker, and a ``publish`` beyond that waits up to ``block_s`` and then
raises :class:`BufferFull` (the caller decides: drop, or slow down).
:meth:`close` (also at interpreter exit, and leaving a ``with`` block)
flushes what waits. Events are checked against the contract before they
are queued, so a bad one fails in the caller, not in the pipeline, and
:func:`event_id` gives a retry of the same attempt the same id, so the
pipeline counts it once.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Final

from models.contracts import UsageEvent
from pipeline.stream.ack_batcher import AckBatcher
from pipeline.stream.producer import new_producer

log = logging.getLogger(__name__)
_NAMESPACE: Final = uuid.UUID("5d9c5b1e-2f0a-4a8e-9a55-6d1f0c3b7e21")


class BufferFull(Exception):
    """``max_buffered`` events already wait for the broker."""


def event_id(tenant: str, request_id: str, attempt: int) -> str:
    """The same id for the same attempt of the same request, on every retry."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{request_id}\x00{attempt}"))


class UsagePublisher:
    def __init__(
        self,
        kafka_url: str,
        topic: str = "usage",
        *,
        events_per_message: int = 100,
        max_message_bytes: int = 900_000,
        linger_s: float = 0.2,
        max_buffered: int = 10_000,
        block_s: float = 5.0,
        retry_for_s: float = 300.0,
        compression: str | None = "lz4",
    ) -> None:
        self._url = kafka_url
        self._topic = topic
        self._per_message = events_per_message
        self._max_bytes = max_message_bytes
        self._linger = linger_s
        self._retry_for = retry_for_s
        self._compression = compression
        self._block = block_s
        self._room = threading.BoundedSemaphore(max_buffered)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._batcher: AckBatcher | None = None
        self.published = 0  # events the broker acknowledged
        self.failed = 0  # events given up after retry_for_s (logged)
        self._thread = threading.Thread(target=self._run, name="usage-publisher", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def publish(self, event: UsageEvent | Mapping[str, Any]) -> str:
        """Queue one usage event; its event id."""
        value = event if isinstance(event, UsageEvent) else UsageEvent.model_validate(event)
        self.publish_line(value.model_dump_json(exclude_none=True).encode())
        return value.event_id

    def publish_line(self, line: bytes) -> None:
        """Queue one line as it is (already checked by the caller)."""
        if self._closed:
            raise RuntimeError("the publisher is closed")
        if not self._ready.wait(self._block) or not self._room.acquire(timeout=self._block):
            raise BufferFull("the broker is behind: events are waiting to be published")
        self._loop.call_soon_threadsafe(self._submit, line)

    def close(self, timeout_s: float = 60.0) -> None:
        """Publish what waits, then stop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if not self._ready.is_set():  # never reached the broker: nothing was queued
            self._stopping.set()
            self._thread.join(timeout_s)
            return
        done = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)
        try:
            done.result(timeout_s)
        except TimeoutError:
            log.error("usage publisher: events still unpublished after %.0fs", timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    def __enter__(self) -> UsagePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the background thread ---------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        if self._loop.run_until_complete(self._start()):
            self._ready.set()
            self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> bool:
        delay = 0.5
        while True:  # publish() waits (block_s) until the broker is first reached
            if self._stopping.is_set():
                return False
            self._producer = new_producer(self._url, self._max_bytes, self._compression)
            try:
                await self._producer.start()
                break
            except Exception as exc:
                log.warning("usage publisher: broker not reachable yet: %r", exc)
                await self._producer.stop()
                await asyncio.to_thread(self._stopping.wait, delay)
                delay = min(delay * 2, 10.0)
        self._batcher = AckBatcher(
            self._producer,
            self._topic,
            events_per_message=self._per_message,
            max_message_bytes=self._max_bytes,
            linger_s=self._linger,
            max_pending=2**62,  # bounded by the semaphore instead
            ack_timeout_s=self._retry_for + 5,
            retry_for_s=self._retry_for,
        )
        return True

    def _submit(self, line: bytes) -> None:
        assert self._batcher is not None
        task = self._loop.create_task(self._deliver(self._batcher, line))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batcher: AckBatcher, line: bytes) -> None:
        try:
            await batcher.submit([line])
            self.published += 1
        except Exception as exc:
            self.failed += 1
            log.error("usage publisher: an event was not published: %r", exc)
        finally:
            self._room.release()

    async def _drain(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._producer.stop()
