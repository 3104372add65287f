"""Kafka plumbing shared by producers, the worker and the benchmark."""

from __future__ import annotations

import time
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


async def end_offsets(url: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """The current end (high watermark) of every partition of a topic.

    Read from fetch responses, not ListOffsets: Tansu 0.6 answers
    ListOffsets(latest) with wrong, too-small offsets (1 for a partition of
    ten messages) while its fetch responses carry the right high watermark.
    A drain that trusted ListOffsets would stop early and report success.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(url),
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,  # one small batch is enough to learn the watermark
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes cluster metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return {}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark for {topic} within {timeout_s}s")
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in tps}
    finally:
        await consumer.stop()
