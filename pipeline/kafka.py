"""Kafka plumbing shared by producers, the worker and the benchmark."""

from __future__ import annotations

from contextlib import suppress

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def bootstrap(url: str) -> str:
    """``kafka://h:p[,h:p]`` or ``h:p`` to aiokafka's bootstrap string."""
    return url.removeprefix("kafka://").rstrip("/")


def faust_broker(url: str) -> str:
    return "kafka://" + bootstrap(url)


async def ensure_topics(url: str, names: list[str], partitions: int) -> None:
    """Create missing topics with their final partition count (Tansu cannot add
    partitions later, and co-partitioned topics must match)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(url))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            with suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def end_offsets(url: str, topic: str) -> dict[int, int]:
    """The current end (high watermark) of every partition of a topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(url), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes cluster metadata
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()
