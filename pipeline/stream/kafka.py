"""Kafka plumbing shared by producers, the worker and the benchmark."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

if TYPE_CHECKING:  # polars-free at import: the LiteLLM callback's publisher uses this module
    from pipeline.stream.message import Message


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


async def delete_topics(url: str, names: list[str]) -> None:
    """Delete the topics that exist among ``names`` (the embedded broker keeps
    every message in memory until its topic is deleted)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(url))
    await admin.start()
    try:
        known = set(await admin.list_topics())
        existing = [n for n in names if n in known]
        if existing:
            await admin.delete_topics(existing)
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


async def read_topic(url: str, topic: str, timeout_s: float = 120.0) -> list[Message]:
    """Every message of a topic, up to its end offsets at the time of the call."""
    from pipeline.stream.message import Message

    ends = await end_offsets(url, topic)
    out: list[Message] = []
    tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
    if not tps:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(url),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024**2,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        remaining = {tp.partition: ends[tp.partition] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read only part of {topic} within {timeout_s}s")
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                out.extend(
                    Message(tp.partition, r.offset, r.value or b"")
                    for r in records
                    if r.offset < ends[tp.partition]
                )
                if records and records[-1].offset + 1 >= ends[tp.partition]:
                    remaining.pop(tp.partition, None)
    finally:
        await consumer.stop()
    return out


async def committed_offsets(url: str, group: str, topic: str) -> dict[int, int]:
    """A consumer group's committed offsets (without joining the group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(url), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        out = {}
        for p in sorted(consumer.partitions_for_topic(topic) or ()):
            offset = await consumer.committed(TopicPartition(topic, p))
            out[p] = offset or 0
        return out
    finally:
        await consumer.stop()
