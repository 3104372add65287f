"""UsagePublisher, the client for gateways we have no door for, against the
real broker: what it queues lands once, batched; with no broker it refuses
at its bound instead of growing."""

from __future__ import annotations

import time

import pytest

from pipeline.embedded.runtime import free_port
from pipeline.ingest.client import BufferFull, UsagePublisher, event_id
from tests.factories import event
from tests.integration.conftest import Env
from tests.integration.test_ingest import published

pytestmark = pytest.mark.integration


def test_queued_events_land_once_in_batched_messages(env: Env) -> None:
    env.finops("db", "upgrade")
    events = [
        event(event_id=event_id("acme", f"r{i // 2}", i % 2 + 1), request_id=f"r{i // 2}",
              attempt=i % 2 + 1, node_id=f"gw-{i % 3}", input_tokens=100 + i)
        for i in range(300)
    ]  # fmt: skip
    with UsagePublisher(env.kafka_url, env.topic, compression=None, linger_s=0.05) as publisher:
        ids = [publisher.publish(e) for e in events]
        # A retry of an attempt gets the same id (and counts once downstream).
        publisher.publish(events[0])
    assert ids[0] == event_id("acme", "r0", 1) == events[0]["event_id"]
    assert (publisher.published, publisher.failed) == (301, 0)
    assert published(env, env.topic) < 301  # many events per message
    env.finops("worker", "--drain")
    rows = env.query("SELECT sum(attempts), sum(input_tokens), sum(requests) FROM spend_window")
    assert tuple(rows[0]) == (300, sum(100 + i for i in range(300)), 150)


def test_a_publisher_without_a_broker_refuses_at_its_bound() -> None:
    publisher = UsagePublisher(f"127.0.0.1:{free_port()}", block_s=0.5)
    start = time.monotonic()
    with pytest.raises(BufferFull):
        publisher.publish(event())
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError):  # the contract judges in the caller
        publisher.publish(event(input_tokens=-1))
    start = time.monotonic()
    publisher.close()
    assert time.monotonic() - start < 15  # it stops trying at once, not at exit
