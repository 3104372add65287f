"""The one dead-letter contract, on every topic: a dead letter found while a
batch was prepared or inside its transaction is published with its headers
and acknowledged before that transaction commits; the table holds it once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.prices import PriceBook
from pipeline.cache.sink import CacheSink
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.spend.batch import prepare
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.spend.sink import SpendSink
from pipeline.stream.dead_letter import DeadLetter
from pipeline.stream.kafka import bootstrap, end_offsets
from pipeline.stream.message import Message
from pipeline.stream.offsets import OffsetSink
from tests.factories import ADMISSION, cache_event, event, line
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

T0 = datetime(2025, 11, 1, 10, 0, tzinfo=UTC)  # inside the fixtures' admitted days


class Recorder:
    """A dead-letter topic that, as each batch is published, looks from a
    connection of its own at what the sink's transaction has committed."""

    def __init__(self, database_url: str, topic: str) -> None:
        self.url, self.topic = database_url, topic
        self.published: list[DeadLetter] = []
        # Per publish: dead letters published before it, and what was
        # committed then: dead_letter rows, and the sum of the next offsets.
        self.seen: list[tuple[int, int, int]] = []

    async def __call__(self, dead: Sequence[DeadLetter]) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM dead_letter WHERE topic = %s),"
                " (SELECT coalesce(sum(next_offset), 0) FROM sink_offset WHERE topic = %s)",
                (self.topic, self.topic),
            )
            rows, offsets = (await cur.fetchone()) or (0, 0)
        self.seen.append((len(self.published), int(rows), int(offsets)))
        self.published.extend(dead)


def _sample(gpu: str, seconds: int) -> bytes:
    ts = (T0 + timedelta(seconds=seconds)).isoformat()
    return json.dumps(
        {"node_id": "n1", "gpu": gpu, "ts": ts, "power_w": 300.0, "energy_mj": 10**6 * seconds}
    ).encode()


def _stored(env: Env, topic: str) -> list[tuple[object, ...]]:
    return env.query(
        'SELECT partition, "offset", line, reason FROM dead_letter WHERE topic = %s'
        " ORDER BY 1, 2, 3",
        (topic,),
    )


async def _claimed(sink: OffsetSink, run: Any) -> Any:
    try:
        await sink.claim([0])
        return await run()
    finally:
        await sink.close()


def test_every_topic_dead_letters_to_its_topic_before_the_commit(env: Env) -> None:
    prices = PriceBook(tuple(default_prices()))
    frame = book_frame(prices)

    # Usage: a line the contract rejects (prepare), then a re-sent key with
    # another payload, found only against seen_event (inside the transaction).
    spend_dlq = Recorder(env.database_url, "u")
    spend = SpendSink(env.database_url, "u", publish_dead=spend_dlq)
    first = [Message(0, 0, line(event()) + b"\nnot json")]
    resent = [Message(0, 1, line(event(input_tokens=1)))]

    async def usage() -> None:
        await spend.apply(prepare(first, prices, frame, ADMISSION), prices)
        await spend.apply(prepare(resent, prices, frame, ADMISSION), prices)

    asyncio.run(_claimed(spend, usage))

    # Telemetry: a sample older than the stored one, known only inside the transaction.
    tel_dlq = Recorder(env.database_url, "tel")
    tel = TelemetrySink(env.database_url, "tel", publish_dead=tel_dlq)

    async def telemetry() -> None:
        await tel.apply([Message(0, 0, _sample("0", 10))])
        await tel.apply([Message(0, 1, _sample("0", 5))])

    asyncio.run(_claimed(tel, telemetry))

    # Cache events: a schema violation.
    cache_dlq = Recorder(env.database_url, "cache")
    cache = CacheSink(env.database_url, "cache", publish_dead=cache_dlq)
    bad = line(cache_event(op="hover"))
    batch = [Message(0, 0, line(cache_event()) + b"\n" + bad)]
    asyncio.run(_claimed(cache, lambda: cache.apply(batch)))

    for dlq, topic, reasons, offsets in (
        (spend_dlq, "u", ["not_json", "conflict"], [0, 1]),
        (tel_dlq, "tel", ["telemetry_out_of_order"], [1]),
        (cache_dlq, "cache", ["schema"], [0]),
    ):
        stored = _stored(env, topic)
        assert [str(r[3]).split(":")[0] for r in stored] == reasons
        assert [(d.partition, d.offset, d.line, d.reason) for d in dlq.published] == stored
        # Each publish saw nothing of its own batch committed: only the dead
        # letters published before it, and the offsets short of its own.
        assert [rows for _, rows, _ in dlq.seen] == [before for before, _, _ in dlq.seen]
        assert [applied for _, _, applied in dlq.seen] == offsets


async def _dead_letter_messages(url: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    ends = await end_offsets(url, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(url), enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + 30
        while sum(ends.values()) > len(out) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((r.value or b"", dict(r.headers)) for r in records)
    finally:
        await consumer.stop()
    return out


def test_a_worker_publishes_every_topics_dead_letters_with_their_headers(
    env: Env, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    usage = [line(event(ts=now.isoformat(), node_id="n1")), b"{not json", b'{"tenant": 5}']
    samples = [
        json.dumps(
            {"node_id": "n1", "gpu": "0", "ts": now.isoformat(), "power_w": 1.0, "energy_mj": 1}
        ).encode(),
        b'{"node_id": "n1"}',
    ]
    caches = [line(cache_event(ts=now.isoformat(), op="hover", node_id="n1"))]
    topics = {
        env.topic: usage,
        f"{env.topic}-telemetry": samples,
        f"{env.topic}-cache": caches,
    }
    env.load_default_prices()
    for i, (topic, lines) in enumerate(topics.items()):
        path = tmp_path / f"{i}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        env.finops("replay", str(path), "--topic", topic)
    env.finops("worker", "--drain")

    for topic in topics:
        stored = _stored(env, topic)
        assert stored, topic
        published = asyncio.run(_dead_letter_messages(env.kafka_url, f"{topic}-dlq"))
        assert sorted(
            (int(h["partition"]), int(h["offset"]), int(h["line"]), h["reason"].decode())
            for _, h in published
        ) == sorted(stored)  # type: ignore[type-var]
        # The value is the redacted line as sent, never more.
        assert all(value in b"\n".join(topics[topic]) for value, _ in published)
