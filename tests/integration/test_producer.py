"""Our producers against the real broker: every compression codec the
settings offer round-trips every line, keyed by node_id, batched as NDJSON."""

from __future__ import annotations

import asyncio
import json
import random
import typing
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.settings import Settings
from pipeline.stream.kafka import bootstrap, end_offsets, ensure_topics
from pipeline.stream.producer import BatchingPublisher
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

CODECS = typing.get_args(Settings.model_fields["compression"].annotation)


async def _read_all(kafka_url: str, topic: str) -> list[tuple[bytes, bytes]]:
    ends = await end_offsets(kafka_url, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(kafka_url), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes, bytes]] = []
        remaining = {tp: ends[tp.partition] for tp in tps}
        while remaining:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                out += [(r.key or b"", r.value or b"") for r in records]
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
        return out
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_every_line_under_its_key(env: Env, codec: str) -> None:
    rng = random.Random(codec)
    lines = [
        json.dumps(
            {"node_id": f"node-{rng.randint(1, 7)}", "tenant": "t", "tokens": rng.randint(0, 9999)}
        ).encode()
        for _ in range(1500)
    ]
    topic = f"{env.topic}-{codec}"

    async def run() -> list[tuple[bytes, bytes]]:
        await ensure_topics(env.kafka_url, [topic], 3)
        publisher = BatchingPublisher(
            env.kafka_url,
            topic,
            events_per_message=100,
            max_message_bytes=4096,
            compression=Settings(compression=codec).kafka_compression,
        )
        published = await publisher.publish(lines)
        assert published.events == len(lines)
        return await _read_all(env.kafka_url, topic)

    messages = asyncio.run(run())
    got = Counter((key, line) for key, value in messages for line in value.split(b"\n") if line)
    want = Counter((json.loads(line)["node_id"].encode(), line) for line in lines)
    assert got == want
    # Batched, not one event per message: neither 100 lines nor 4 KiB exceeded.
    assert len(lines) / 100 <= len(messages) < len(lines) / 10
    assert all(len(value) <= 4096 for _, value in messages)


def test_an_oversized_line_goes_alone_and_one_beyond_any_request_is_counted(env: Env) -> None:
    """A line over the message limit is sent alone (the worker dead-letters
    it as too_large, with its place); one beyond the largest request the
    client sends is counted as refused, not published; the rest of the
    stream goes on either way."""
    small = [json.dumps({"node_id": "n", "i": i}).encode() for i in range(10)]
    big = json.dumps({"node_id": "n", "pad": "x" * 6000}).encode()
    huge = json.dumps({"node_id": "n", "pad": "x" * (3 * 1024**2)}).encode()
    topic = f"{env.topic}-sizes"

    async def run() -> tuple[object, list[tuple[bytes, bytes]]]:
        await ensure_topics(env.kafka_url, [topic], 1)
        publisher = BatchingPublisher(
            env.kafka_url, topic, events_per_message=100, max_message_bytes=4096, compression=None
        )
        published = await publisher.publish([*small[:5], big, huge, *small[5:]])
        return published, await _read_all(env.kafka_url, topic)

    published, messages = asyncio.run(run())
    assert (published.events, published.refused) == (11, 1)  # type: ignore[attr-defined]
    assert [v for _, v in messages if b"pad" in v] == [big]  # alone in its message
    assert sum(v.count(b'"i"') for _, v in messages) == 10
