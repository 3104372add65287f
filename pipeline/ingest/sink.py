"""Where a front door's requests go: accepted usage lines to the usage topic
(through :class:`pipeline.stream.ack_batcher.AckBatcher`), refused items to
the usage dead-letter topic and the ``dead_letter`` table.

A request's dead letters are filed at topic ``ingest:<door>``, partition
-1, offset a number drawn from the SHA-256 of the request's body, and line
the item's place: unique like the log's own, and the same for a client's
retry of the same body, so a retry files nothing twice. They hold the
producer's shape, not our contract, so ``finops dead-letters replay`` leaves
them alone: fix the mapping and let the producer resend (event ids are
stable, so what was accepted the first time counts once).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Final

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine, text

from pipeline.ingest.outcome import Refused
from pipeline.settings import Settings
from pipeline.stream.ack_batcher import AckBatcher, NotAcknowledged
from pipeline.stream.dead_letter import DeadLetter, dead_letter
from pipeline.stream.kafka import ensure_topics
from pipeline.stream.producer import new_producer

DOOR_PREFIX: Final = "ingest:"


def request_number(body: bytes) -> int:
    """A request's place among the door's dead letters: 63 bits of its body's
    SHA-256 (a bigint), the same for the same body."""
    return int.from_bytes(hashlib.sha256(body).digest()[:8], "big") >> 1


class IngestSink:
    def __init__(self, settings: Settings, kafka_url: str, engine: Engine) -> None:
        self._settings = settings
        self._kafka_url = kafka_url
        self._engine = engine
        self._producer: AIOKafkaProducer | None = None
        self._batcher: AckBatcher | None = None

    @property
    def batcher(self) -> AckBatcher:
        if self._batcher is None:
            raise RuntimeError("the sink is not started")
        return self._batcher

    @property
    def ready(self) -> bool:
        return self._batcher is not None

    async def start(self) -> None:
        s = self._settings
        await ensure_topics(
            self._kafka_url, [s.usage_topic, s.usage_dlq_topic, *s.side_topics], s.partitions
        )
        self._producer = new_producer(self._kafka_url, s.max_message_bytes, s.kafka_compression)
        await self._producer.start()
        self._batcher = AckBatcher(
            self._producer,
            s.usage_topic,
            events_per_message=s.events_per_message,
            max_message_bytes=s.max_message_bytes,
            linger_s=s.ingest_linger_s,
            max_pending=s.ingest_max_pending,
            ack_timeout_s=s.ingest_ack_timeout_s,
            retry_for_s=max(s.ingest_ack_timeout_s - 5, 1),
        )

    async def stop(self) -> None:
        """Flush what lingers, wait for the broker, then close."""
        if self._batcher is not None:
            await self._batcher.close()
        if self._producer is not None:
            await self._producer.stop()
        self._batcher = self._producer = None

    async def publish(self, lines: list[bytes]) -> None:
        await self.batcher.submit(lines)

    async def dead_letters(self, door: str, body: bytes, refused: list[Refused]) -> None:
        """Each refused item to the dead-letter topic (acknowledged), then to
        the table; :class:`NotAcknowledged` if either fails in time."""
        if not refused or self._producer is None:
            return
        topic = DOOR_PREFIX + door
        request = request_number(body)
        letters = [dead_letter(-1, request, r.item, r.reason, r.evidence) for r in refused]
        try:
            async with asyncio.timeout(self._settings.ingest_ack_timeout_s):
                sends = [
                    await self._producer.send(
                        self._settings.usage_dlq_topic,
                        d.raw,
                        key=topic.encode(),
                        headers=[
                            ("reason", d.reason.encode()),
                            ("door", door.encode()),
                            ("request", str(request).encode()),
                            ("line", str(d.line).encode()),
                        ],
                    )
                    for d in letters
                ]
                await asyncio.gather(*sends)
                await asyncio.to_thread(self._file, topic, letters)
        except Exception as exc:
            raise NotAcknowledged(f"dead letters not filed: {exc!r}"[:300]) from exc

    def _file(self, topic: str, letters: list[DeadLetter]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    'INSERT INTO dead_letter (topic, partition, "offset", line, reason, raw)'
                    " VALUES (:t, :p, :o, :l, :r, :raw)"
                    " ON CONFLICT ON CONSTRAINT dead_letter_position DO NOTHING"
                ),
                [
                    {"t": topic, "p": d.partition, "o": d.offset, "l": d.line,
                     "r": d.reason, "raw": d.raw}
                    for d in letters
                ],
            )  # fmt: skip
