"""UsagePublisher, the client for gateways we have no door for, against the
real broker: what it queues lands once, batched; with no broker it refuses
at its bound instead of growing (run in a process of its own:
publisher_job.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.integration.conftest import Env
from tests.integration.test_ingest import published

pytestmark = pytest.mark.integration


def job(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.publisher_job", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_queued_events_land_once_in_batched_messages(env: Env) -> None:
    result = job("publish", env.kafka_url, env.topic)
    assert result == {"first_id_stable": True, "published": 301, "failed": 0}
    assert published(env, env.topic) < 301  # many events per message
    env.finops("worker", "--drain")
    rows = env.query("SELECT sum(attempts), sum(input_tokens), sum(requests) FROM spend_window")
    assert tuple(rows[0]) == (300, sum(100 + i for i in range(300)), 150)


def test_a_publisher_without_a_broker_refuses_at_its_bound() -> None:
    result = job("no-broker")
    assert result["refused"] and result["judged"]
    assert result["waited_s"] < 5
    assert result["close_s"] < 15  # it stops trying at once, not at exit
