"""Lines from many concurrent callers, published as NDJSON messages per key,
each caller told when every one of its lines is acknowledged.

A front door receives events a few at a time (LiteLLM posts one call, an
OpenTelemetry exporter a handful of spans), but the workers are built to
take batches: lines of one node key that arrive within ``linger_s`` share a
message, up to ``events_per_message`` lines or ``max_message_bytes``. A
caller's :meth:`AckBatcher.submit` returns once the broker acknowledged
every message holding one of its lines (acks=all), so a front door answers
2xx only for events that are durable.

Memory is bounded: at most ``max_pending`` lines wait for their ack; a
submit beyond that is refused at once with :class:`BufferFull` (the HTTP
door turns it into 429 and Retry-After) rather than queued. A send that
fails is retried with backoff for ``retry_for_s``; a caller waits at most
``ack_timeout_s`` (:class:`NotAcknowledged`: the door answers 503 and the client
retries; a line delivered after all is a duplicate the pipeline dedups by
its event id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from pipeline.stream.producer import key_of

log = logging.getLogger(__name__)
_TOO_LARGE: Final = (MessageSizeTooLargeError, RecordTooLargeError)


class BufferFull(Exception):
    """More lines are waiting for the broker than the batcher holds."""


class NotAcknowledged(Exception):
    """The broker did not acknowledge a submit's lines in time (or refused them)."""


@dataclass
class _Chunk:
    done: asyncio.Future[None]
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


def _retrieve(f: asyncio.Future[None]) -> None:
    # A caller that timed out no longer awaits its chunk: its outcome is
    # logged by the delivery, not raised again as "never retrieved".
    if not f.cancelled():
        f.exception()


class AckBatcher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        events_per_message: int,
        max_message_bytes: int,
        linger_s: float = 0.05,
        max_pending: int = 50_000,
        ack_timeout_s: float = 30.0,
        retry_for_s: float = 25.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._per_message = events_per_message
        self._max_bytes = max_message_bytes
        self._linger = linger_s
        self._max_pending = max_pending
        self._ack_timeout = ack_timeout_s
        self._retry_for = retry_for_s
        self._open: dict[bytes, _Chunk] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self.messages = 0  # published and acknowledged
        self._last_failure = self._last_success = 0.0

    @property
    def failing(self) -> bool:
        """A send failed in the last 10 s and none succeeded since: the broker
        is away. (A window, not a latch: with no traffic nothing would clear it.)"""
        return self._last_failure > self._last_success and (
            time.monotonic() - self._last_failure < 10
        )

    @property
    def fits(self) -> int:
        """The most lines one submit may ever hold."""
        return self._max_pending

    @property
    def pending(self) -> int:
        """Lines submitted and not yet acknowledged (or given up)."""
        return self._pending

    def has_room(self, lines: int) -> bool:
        return self._pending + lines <= self._max_pending

    async def submit(self, lines: Sequence[bytes]) -> None:
        """Publish ``lines``; return when the broker acknowledged them all."""
        if not lines:
            return
        if not self.has_room(len(lines)):
            raise BufferFull(f"{self._pending} lines wait for the broker")
        self._pending += len(lines)
        waits = {id(f): f for f in (self._add(line) for line in lines)}
        try:
            async with asyncio.timeout(self._ack_timeout):
                await asyncio.gather(*(asyncio.shield(f) for f in waits.values()))
        except TimeoutError as exc:
            raise NotAcknowledged(f"not acknowledged within {self._ack_timeout:g}s") from exc
        except Exception as exc:  # a delivery gave up: the broker is away or refused it
            raise NotAcknowledged(f"not acknowledged: {exc!r}"[:300]) from exc

    async def close(self) -> None:
        """Send what lingers and wait for every delivery to end."""
        for key in list(self._open):
            self._flush(key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _add(self, line: bytes) -> asyncio.Future[None]:
        key = key_of(line)
        chunk = self._open.get(key)
        if chunk is not None and chunk.size + len(line) + 1 > self._max_bytes:
            self._flush(key)
            chunk = None
        if chunk is None:
            loop = asyncio.get_running_loop()
            chunk = _Chunk(loop.create_future())
            chunk.done.add_done_callback(_retrieve)
            chunk.timer = loop.call_later(self._linger, self._flush_if, key, chunk)
            self._open[key] = chunk
        chunk.lines.append(line)
        chunk.size += len(line) + 1
        if len(chunk.lines) >= self._per_message:
            self._flush(key)
        return chunk.done

    def _flush_if(self, key: bytes, chunk: _Chunk) -> None:
        if self._open.get(key) is chunk:
            self._flush(key)

    def _flush(self, key: bytes) -> None:
        chunk = self._open.pop(key)
        if chunk.timer is not None:
            chunk.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._deliver(key, chunk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, key: bytes, chunk: _Chunk) -> None:
        value = b"\n".join(chunk.lines)
        deadline, delay = time.monotonic() + self._retry_for, 0.2
        try:
            while True:
                try:
                    await (await self._producer.send(self._topic, value, key=key))
                    self.messages += 1
                    self._last_success = time.monotonic()
                    chunk.done.set_result(None)
                    return
                except _TOO_LARGE as exc:  # the same every time: never retried
                    chunk.done.set_exception(exc)
                    return
                except Exception as exc:
                    self._last_failure = time.monotonic()
                    if time.monotonic() + delay > deadline:
                        log.error(
                            "fault publish_failed: %d lines given up: %r", len(chunk.lines), exc
                        )
                        chunk.done.set_exception(exc)
                        return
                    log.warning("fault publish_failed: re-sending %d lines", len(chunk.lines))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._pending -= len(chunk.lines)
