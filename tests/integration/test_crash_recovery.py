"""A worker killed with SIGKILL, at exact fault points and at random moments,
then restarted: every event still counts exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources

import pytest

from pipeline.kafka import ensure_topics
from pipeline.producer import BatchingPublisher
from pipeline.simulate import SimConfig, generate
from tests import reference
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

SMALL_BATCHES = {"FINOPS_BATCH_MESSAGES": "3", "FINOPS_BATCH_WITHIN_S": "0.05"}


def applied_offsets(env: Env) -> int:
    rows = env.query("SELECT coalesce(sum(next_offset), 0) FROM sink_offset")
    return int(rows[0][0])  # type: ignore[call-overload]


def test_sigkill_at_fault_points_and_random_moments_counts_each_event_once(env: Env) -> None:
    cfg = SimConfig(
        start=datetime(2025, 11, 4, tzinfo=UTC),
        duration_s=10**9,
        rate=50.0,
        seed=404,
        max_events=6000,
    )
    events = list(generate(cfg))
    lines = [json.dumps(e).encode() for e in events]
    # Resend a slice too: a crash must not turn a duplicate into a double count.
    lines += lines[100:400]

    async def publish() -> None:
        await ensure_topics(env.kafka_url, [env.topic, f"{env.topic}-dlq"], 3)
        await BatchingPublisher(
            env.kafka_url, env.topic, events_per_message=20, max_message_bytes=900_000
        ).publish(lines)

    asyncio.run(publish())
    env.finops("db", "upgrade")
    prices_csv = env.home / "prices.csv"
    prices_csv.write_bytes(
        resources.files("models").joinpath("data/default_prices.csv").read_bytes()
    )
    env.finops("prices", "load", str(prices_csv))

    # Exact fault points: after the sink committed but before the ack, and
    # before the commit. The worker dies by SIGKILL at the Nth batch.
    for point in ("after_commit:2", "before_commit:3", "after_commit:5"):
        before = applied_offsets(env)
        crashed = env.finops(
            "worker", "--drain", check=False, extra={**SMALL_BATCHES, "FINOPS_TEST_CRASH_AT": point}
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
        assert applied_offsets(env) > before or point.startswith("before")

    # Random moments: kill -9 while it drains.
    rng = random.Random(9)
    for _ in range(2):
        worker = env.spawn("worker", extra=SMALL_BATCHES)
        start = applied_offsets(env)
        deadline = time.monotonic() + 90
        while applied_offsets(env) == start and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 0.4))
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)

    env.finops("worker", "--drain")

    expected = reference.totals_by_tenant(
        [json.loads(x) for x in lines], reference.parse_prices(prices_csv.read_text())
    )
    rows = env.query(
        "SELECT tenant, sum(attempts), sum(input_tokens), sum(output_tokens), sum(cost_usd),"
        " sum(unpriced_attempts) FROM spend_window GROUP BY tenant"
    )
    assert {r[0] for r in rows} == set(expected)
    for tenant, attempts, inp, out, cost, unpriced in rows:
        exp = expected[tenant]  # type: ignore[index]
        assert (attempts, inp, out, unpriced) == (
            exp["attempts"],
            exp["input_tokens"],
            exp["output_tokens"],
            0,
        )
        assert cost == exp["cost_usd"]
        assert isinstance(cost, Decimal)
    accepted, dups = env.query(
        "SELECT sum(events_accepted), sum(events_duplicate) FROM sink_offset"
    )[0]
    assert (accepted, dups) == (len(events), 300)
