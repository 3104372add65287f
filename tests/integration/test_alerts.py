"""The rules in the stream: an incident injected by the simulator fires its
alert within two windows of its start and resolves after it ends, nothing
else fires, and each transition reaches the ``alerts`` topic."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from models.catalog import parse_yaml
from pipeline.alerts.evaluator import MINUTE, evaluate
from pipeline.stream.kafka import read_topic
from tests.integration.conftest import Env
from tests.integration.test_webhook import Hook

pytestmark = pytest.mark.integration


def _run(
    env: Env,
    incident: str | None,
    webhook: str | None = None,
    *,
    side: bool = False,
    hours: int = 1,
) -> tuple[datetime, datetime, str]:
    """``hours`` of simulated traffic with ``incident`` for 15 minutes from
    the middle (0:30 to 0:45 of one hour), drained by a real worker that
    evaluates every closed minute. Returns the incident's start and end."""
    start = (datetime.now(UTC) - timedelta(hours=hours)).replace(second=0, microsecond=0)
    alerts_topic = f"{env.topic}-alerts"
    extra = {"FINOPS_ALERTS_TOPIC": alerts_topic, "FINOPS_ALERT_LATENESS_S": "60"}
    if webhook:
        extra["FINOPS_ALERT_WEBHOOK_URL"] = webhook
    env.load_default_prices()
    env.finops("catalog", "load")
    env.finops(
        "simulate", "--rate", "3", "--duration", str(hours * 3600), "--start", start.isoformat(),
        *(("--incident", incident) if incident else ()), "--side" if side else "--no-side",
    )  # fmt: skip
    env.finops("worker", "--drain", extra=extra)
    begin = start + timedelta(minutes=30 * hours)
    return begin, begin + timedelta(minutes=15), alerts_topic


def test_a_clean_run_with_side_traffic_fires_nothing(env: Env) -> None:
    """Two clean hours with GPU telemetry and cache events: every rule runs
    on every closed minute and none fires."""
    _run(env, None, side=True, hours=2)
    assert env.query("SELECT count(*) FROM spend_window")[0][0] > 1000
    assert env.query("SELECT count(*) FROM cache_window")[0][0] > 100
    (through,) = env.query("SELECT evaluated_through FROM alert_watermark")[0]
    (last,) = env.query("SELECT max(window_start) FROM spend_window")[0]
    assert last - through <= timedelta(minutes=3)  # type: ignore[operator]
    assert env.query("SELECT rule, subject, summary FROM alert") == []


def test_an_unpriced_model_incident_fires_and_resolves(env: Env) -> None:
    hook = Hook(failures=1)  # the first post fails: the worker retries it
    try:
        begin, end, alerts_topic = _run(env, "unpriced-model", hook.url)
    finally:
        hook.server.shutdown()
        hook.server.server_close()
    texts = [m["text"] for m in hook.received]
    assert len(texts) == 2 and "[page]" in texts[0] and "mystery-9b" in texts[0]
    assert texts[1].startswith(":white_check_mark: resolved: unpriced_model:")
    rows = env.query(
        "SELECT rule, array_to_string(subject, '/'), status, window_start, resolved_at, summary"
        " FROM alert ORDER BY fired_at"
    )
    # Nothing else fires: the rest of the hour is clean.
    assert [(rule, subject) for rule, subject, *_ in rows] == [
        ("unpriced_model", "mystery-9b/newco")
    ], rows
    ((_, _, status, window, resolved, summary),) = rows
    assert begin <= window < begin + timedelta(minutes=2)  # fired within two windows
    assert status == "resolved" and end < resolved <= end + timedelta(minutes=2)  # type: ignore[operator]
    assert "no price" in str(summary)

    messages = asyncio.run(read_topic(env.kafka_url, alerts_topic, timeout_s=30))
    events = [json.loads(m.value)["event"] for m in messages]
    assert events == ["fire", "resolve"]

    listed = env.finops("alerts", "list", "--all").stdout
    assert "unpriced_model" in listed and "mystery-9b" in listed
    ((alert_id,),) = env.query("SELECT id FROM alert")
    assert "acknowledged" in env.finops("alerts", "ack", str(alert_id), "--by", "sam").stdout
    assert env.query("SELECT acked_by FROM alert") == [("sam",)]


@pytest.mark.parametrize(
    ("incident", "rule", "subject", "side", "hours", "resolves_within"),
    [
        ("tokenizer-drift", "tokenizer_drift", "claude-4.5-sonnet", False, 1, 7),
        ("structured-output-loop", "structured_reprompt", "/v1/extract", False, 1, 7),
        ("runaway-agent", "runaway_request", "acme/runaway-agent-0001", False, 1, 7),
        ("budget-breach", "token_budget_breach", "/v1/summarize", False, 1, 7),
        ("retry-storm", "retry_amplification", "/v1/agent", False, 1, 7),
        ("cache-thrash", "cache_hit_regression", "*", True, 1, 7),
        # The spike leaves the rolling hour an hour after it ends.
        ("spend-spike", "tenant_spend_spike", "soylent", False, 3, 62),
    ],
)
def test_incidents_fire_in_the_stream_and_resolve(
    env: Env, incident: str, rule: str, subject: str, side: bool, hours: int, resolves_within: int
) -> None:
    begin, end, _ = _run(env, incident, side=side, hours=hours)
    rows = env.query(
        "SELECT status, window_start, resolved_at FROM alert"
        " WHERE rule = %s AND array_to_string(subject, '/') = %s ORDER BY fired_at",
        (rule, subject),
    )
    assert len(rows) == 1, env.query("SELECT rule, subject, window_start, status FROM alert")
    status, window, resolved = rows[0]
    assert begin <= window < begin + timedelta(minutes=2)  # type: ignore[operator]
    assert status == "resolved", rows
    assert end < resolved <= end + timedelta(minutes=resolves_within)  # type: ignore[operator]


def _judged_through(env: Env, behind: timedelta) -> datetime:
    """The spend stream has reached this minute (returned) and the rules
    have judged the minutes up to ``behind`` before it; no windows at all."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(env.database_url) as conn:
        conn.execute(
            "INSERT INTO sink_offset (sink, topic, partition, next_offset, max_event_ts)"
            " VALUES ('spend', 'usage', 0, 1, %s)",
            (now,),
        )
        conn.execute("INSERT INTO alert_watermark VALUES ('rules', %s)", (now - behind,))
    return now


def _through(env: Env) -> object:
    ((t,),) = env.query("SELECT evaluated_through FROM alert_watermark")
    return t


def test_a_waiting_evaluation_goes_on_after_the_one_under_way(env: Env, engine: Engine) -> None:
    """A drain's last evaluation waits for the timer's one instead of
    skipping it: it blocks on the watermark row, meets the other's update
    (its snapshot is older) and evaluates again from the new watermark."""
    now = _judged_through(env, 30 * MINUTE)
    catalog = parse_yaml(Path("models/data/route_catalog.yaml").read_text())

    def run(wait: bool) -> float:
        t0 = time.monotonic()
        evaluate(engine, lateness=2 * MINUTE, cooldown=MINUTE, catalog=catalog, wait=wait)
        return time.monotonic() - t0

    with psycopg.connect(env.database_url) as other:  # the evaluation under way
        other.execute("SELECT 1 FROM alert_watermark FOR UPDATE")
        run(wait=False)
        assert _through(env) == now - 30 * MINUTE  # skipped: another one holds it

        def finish() -> None:
            time.sleep(1.0)
            other.execute("UPDATE alert_watermark SET evaluated_through = %s", (now - 20 * MINUTE,))
            other.commit()

        finishing = threading.Thread(target=finish)
        finishing.start()
        waited = run(wait=True)
        finishing.join()
    assert waited >= 0.9
    assert _through(env) == now - 2 * MINUTE  # every minute closed by the watermark


def test_an_acknowledgement_during_an_evaluation_is_kept(env: Env, engine: Engine) -> None:
    """On-call acknowledges a firing alert while an evaluation is resolving
    it: the evaluation's snapshot predates the acknowledgement, so its update
    meets a serialization failure; it evaluates again from a fresh snapshot
    and resolves the alert without losing who took it."""
    now = _judged_through(env, 5 * MINUTE)
    with psycopg.connect(env.database_url) as conn:
        # Firing, and nothing in the (empty) windows finds it again.
        ((alert_id,),) = conn.execute(
            "INSERT INTO alert (dedup_key, rule, subject, tenant, severity, status, value,"
            " threshold, summary, contributors, window_start, fired_at, updated_at)"
            " VALUES ('tenant_spend_spike:acme', 'tenant_spend_spike', ARRAY['acme'], 'acme',"
            " 'page', 'firing', 3, 2, 'acme spends 3x its baseline', '[]', %s, %s, %s)"
            " RETURNING id",
            (now - 9 * MINUTE, now - 8 * MINUTE, now - 8 * MINUTE),
        ).fetchall()
    catalog = parse_yaml(Path("models/data/route_catalog.yaml").read_text())

    with psycopg.connect(env.database_url) as acker:
        acker.execute(
            "UPDATE alert SET acked_at = now(), acked_by = 'dana' WHERE id = %s", (alert_id,)
        )

        def commit_once_the_evaluation_waits() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                (waiting,) = env.query(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )[0]
                if waiting:
                    break
                time.sleep(0.05)
            acker.commit()

        acking = threading.Thread(target=commit_once_the_evaluation_waits)
        acking.start()
        evaluate(engine, lateness=2 * MINUTE, cooldown=MINUTE, catalog=catalog)
        acking.join()
    rows = env.query("SELECT status, acked_by, resolved_at FROM alert WHERE id = %s", (alert_id,))
    ((status, acked_by, resolved_at),) = rows
    assert (status, acked_by) == ("resolved", "dana"), rows
    assert resolved_at is not None
    assert _through(env) == now - 2 * MINUTE
