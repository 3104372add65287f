"""The bulk intake in a real faust app on the real broker: what it keeps
of faust's bookkeeping while it bypasses faust's per-record path."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.settings import Settings
from pipeline.stream.kafka import ensure_topics
from pipeline.stream.producer import BatchingPublisher
from pipeline.worker.app import build_app
from tests.factories import event, line
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def test_each_partition_taken_from_is_marked_for_fausts_stall_check(env: Env) -> None:
    """faust logs a partition with a backlog as stalled when its stream has
    not taken a record for ``stream_processing_timeout``; records the
    intake takes count as taken, or a worker behind a backlog would be
    logged as stalled on every partition after five minutes."""
    settings = Settings(
        home=env.home,
        usage_topic=env.topic,
        usage_dlq_topic=f"{env.topic}-dlq",
        telemetry_topic=f"{env.topic}-telemetry",
        cache_topic=f"{env.topic}-cache",
        group_id=f"g-{env.topic}",
        partitions=3,
    )
    # Twelve nodes: every one of the three partitions gets events.
    lines = [line(event(event_id=f"e{i}", node_id=f"gw-{i}")) for i in range(12)]

    async def run() -> set[int]:
        await ensure_topics(env.kafka_url, [env.topic], 3)
        publisher = BatchingPublisher(
            env.kafka_url,
            env.topic,
            events_per_message=1,
            max_message_bytes=10**6,
            compression=None,
        )
        await publisher.publish(lines)
        app, topics = build_app(settings, env.kafka_url)
        inbox = app.inbox(topics.usage, 10**6)
        await app.start()
        try:
            taken: set[int] = set()
            async with asyncio.timeout(90):
                while len(taken) < 3:
                    run = await inbox.get()
                    assert run is not None
                    taken |= {m.partition for m in run[0]}
            inbound = app.monitor.stream_inbound_time
            return {tp.partition for tp in inbound if tp.topic == env.topic}
        finally:
            await app.stop()

    assert asyncio.run(run()) == {0, 1, 2}
