"""Run as a script by test_usage_publisher.py: UsagePublisher's background
thread lives in a process of its own, not in a test process (CPython 3.11.7
can trip over a finished thread's import lock in a later import)."""

from __future__ import annotations

import json
import sys
import time

from pipeline.embedded.runtime import free_port
from pipeline.ingest.client import BufferFull, UsagePublisher, event_id
from tests.factories import event


def publish(kafka_url: str, topic: str) -> dict[str, object]:
    events = [
        event(event_id=event_id("acme", f"r{i // 2}", i % 2 + 1), request_id=f"r{i // 2}",
              attempt=i % 2 + 1, node_id=f"gw-{i % 3}", input_tokens=100 + i)
        for i in range(300)
    ]  # fmt: skip
    with UsagePublisher(kafka_url, topic, compression=None, linger_s=0.05) as publisher:
        ids = [publisher.publish(e) for e in events]
        # A retry of an attempt gets the same id (and counts once downstream).
        publisher.publish(events[0])
    return {
        "first_id_stable": ids[0] == event_id("acme", "r0", 1) == events[0]["event_id"],
        "published": publisher.published,
        "failed": publisher.failed,
    }


def no_broker() -> dict[str, object]:
    publisher = UsagePublisher(f"127.0.0.1:{free_port()}", block_s=0.5)
    start = time.monotonic()
    try:
        publisher.publish(event())
        refused = False
    except BufferFull:
        refused = True
    waited = time.monotonic() - start
    try:
        publisher.publish(event(input_tokens=-1))
        judged = False
    except ValueError:  # the contract judges in the caller
        judged = True
    start = time.monotonic()
    publisher.close()
    return {"refused": refused, "waited_s": waited, "judged": judged,
            "close_s": time.monotonic() - start}  # fmt: skip


if __name__ == "__main__":
    job = sys.argv[1]
    out = publish(sys.argv[2], sys.argv[3]) if job == "publish" else no_broker()
    print(json.dumps(out))
