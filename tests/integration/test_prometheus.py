"""The processes' /metrics, scraped by a real Prometheus and read back
through its HTTP API: a worker's lag rises under a backlog and returns to 0
once it is applied, its freshness under a steady 1,000 events/s has a p95
under 1 s and a p99 within 2 s, and its counters agree with the database;
the front door and the pages count their requests by route and status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pipeline.embedded.runtime import free_port
from pipeline.ingest.client import UsagePublisher
from tests.factories import event
from tests.integration import dashboard
from tests.integration.conftest import Env
from tests.integration.ingest_door import running_door
from tests.integration.pages_server import running_pages
from tests.integration.prometheus import Prometheus, prometheus

pytestmark = pytest.mark.integration

PACED_S = 8.0  # the steady load: this long...
PACED_RATE = 1_000  # ...at this many events a second
BURST = 20_000  # then a backlog, published as fast as the client can


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _lines(prefix: str, start: int, n: int) -> list[bytes]:
    return [
        json.dumps(
            event(
                event_id=f"{prefix}{i}",
                request_id=f"{prefix}{i}",
                tenant=f"t{i % 7}",
                node_id=f"gw-{i % 5}",
                ts=_now(),
            )
        ).encode()
        for i in range(start, start + n)
    ]


def _paced(publisher: UsagePublisher) -> int:
    """PACED_RATE events a second for PACED_S, each stamped when sent."""
    sent, t0 = 0, time.monotonic()
    step = PACED_RATE // 10
    while (elapsed := time.monotonic() - t0) < PACED_S:
        for line in _lines("p", sent, step):
            publisher.publish_line(line)
        sent += step
        time.sleep(max(0.0, sent / PACED_RATE - elapsed))
    return sent


def _first_in_line() -> None:
    """In the child: a higher CPU priority where this user may raise it."""
    with contextlib.suppress(PermissionError):
        os.nice(-10)


def test_a_scraped_worker_shows_lag_freshness_and_outcomes(env: Env, tmp_path: Path) -> None:
    env.load_default_prices()
    port = free_port()
    topic = env.topic
    # The suite runs three test processes on two cores: the worker under test
    # gets the CPU first (as a production worker has its own), so what is
    # measured is the pipeline's freshness, not the other tests' load.
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker"],
        env={**env.vars, "FINOPS_METRICS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_first_in_line,
    )
    try:
        with prometheus(tmp_path, {"worker": [f"127.0.0.1:{port}"]}) as prom:
            lag = f'sum(finops_consumer_lag_messages{{topic="{topic}"}})'
            accepted = f'sum(finops_lines_total{{topic="{topic}",outcome="accepted"}})'
            prom.until('up{job="worker"}', lambda v: v == 1, 60, "the worker is scraped")
            prom.until(
                f'count(finops_consumer_lag_messages{{topic="{topic}"}})',
                lambda v: v == 3,
                90,
                "every usage partition is owned and measured",
            )
            assert prom.scalar(lag) == 0

            with UsagePublisher(env.kafka_url, topic, linger_s=0.05) as publisher:
                paced = _paced(publisher)
            prom.until(accepted, lambda v: v == paced, 120, "the steady load is applied")
            time.sleep(2)  # one more scrape after the last commit
            p99, p95 = (
                prom.scalar(
                    f"histogram_quantile({q}, sum by (le)"
                    f' (finops_event_freshness_seconds_bucket{{topic="{topic}"}}))'
                )
                for q in (0.99, 0.95)
            )
            buckets = prom.query(f'finops_event_freshness_seconds_bucket{{topic="{topic}"}}')
            commit_p99 = prom.scalar(
                "histogram_quantile(0.99, sum by (le) (finops_commit_duration_seconds_bucket))"
            )
            seen = sorted((float(b["le"]), v) for b, v in buckets)
            # Under the suite's load a percent of events can take 1-1.5 s; a
            # fetch held at the broker (faust's 1.5 s wait) moves nearly all.
            said = f"p95 {p95}, p99 {p99}: {seen}, commit p99 {commit_p99}"
            assert p99 is not None and 0 < p99 <= 2.0, said
            assert p95 is not None and p95 < 1.0, said

            with UsagePublisher(env.kafka_url, topic, linger_s=0.05) as publisher:
                for line in [*_lines("b", 0, BURST), b"not json", b'{"event_id": "half"}']:
                    publisher.publish_line(line)
            total = paced + BURST
            prom.until(accepted, lambda v: v == total, 180, "the backlog is applied")
            prom.until(lag, lambda v: v == 0, 30, "lag returns to 0")
            peak = prom.scalar(f"max_over_time({lag}[10m:1s])")
            assert peak is not None and peak > 0, "lag never rose under the backlog"

            dead = prom.query(f'finops_dead_letters_total{{topic="{topic}"}}')
            assert sum(v for _, v in dead) == 2
            stored = env.query(
                "SELECT split_part(reason, ':', 1), count(*) FROM dead_letter"
                " WHERE topic = %s GROUP BY 1",
                (topic,),
            )
            assert {labels["reason"]: v for labels, v in dead} == {r: n for r, n in stored}
            (windows,) = env.query("SELECT sum(attempts) FROM spend_window")[0]
            assert windows == total
            assert (
                prom.scalar(f'sum(finops_messages_total{{topic="{topic}"}})')
                == env.query("SELECT sum(next_offset) FROM sink_offset WHERE sink = 'spend'")[0][0]
            )
            assert (prom.scalar('sum(finops_batches_total{agent="spend"})') or 0) > 0
            busy = prom.scalar('finops_stage_busy_seconds_total{agent="spend",stage="commit"}')
            assert busy is not None and busy > 0
            commits = prom.scalar('finops_commit_duration_seconds_count{agent="spend"}')
            assert commits == prom.scalar('finops_batches_total{agent="spend"}')
            assert prom.scalar("finops_energy_windows_pending") is not None
            assert prom.scalar("finops_alert_evaluations_total") is not None
            for expr in dashboard.promql():  # every panel's query, by the real Prometheus
                prom.query(expr)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def _requests(prom: Prometheus, job: str, metric: str) -> dict[tuple[str, str], float]:
    return {
        (labels.get("endpoint") or labels["route"], labels["status"]): v
        for labels, v in prom.query(f'{metric}{{job="{job}"}}')
    }


def test_the_door_and_the_pages_count_requests_by_route_and_status(
    env: Env, tmp_path: Path
) -> None:
    door_metrics, pages_metrics = free_port(), free_port()
    pages_log = env.home / "pages.log"
    with (
        running_door(env, FINOPS_METRICS_PORT=str(door_metrics)) as door,
        running_pages(env, pages_log, FINOPS_METRICS_PORT=str(pages_metrics)) as pages_url,
    ):
        jobs = {"ingest": [f"127.0.0.1:{door_metrics}"], "web": [f"127.0.0.1:{pages_metrics}"]}
        with prometheus(tmp_path, jobs) as prom:
            body = b"\n".join(_lines("d", 0, 3)) + b"\nnot json\n"
            assert door.post("/v1/usage", body, "application/x-ndjson").status_code == 200
            assert (
                door.post("/v1/usage", body, "application/x-ndjson", key="nope").status_code == 401
            )
            assert door.post("/no/such/path", b"", "text/plain").status_code == 404
            assert httpx.get(f"{pages_url}/api/alerts", timeout=10).status_code == 401
            assert httpx.get(f"{pages_url}/wp-admin.php", timeout=10).status_code == 404

            prom.until(
                'sum(finops_ingest_requests_total{job="ingest",endpoint="/v1/usage"})',
                lambda v: v == 2,
                60,
                "the door's requests are scraped",
            )
            door_counts = _requests(prom, "ingest", "finops_ingest_requests_total")
            assert door_counts[("/v1/usage", "200")] == 1
            assert door_counts[("/v1/usage", "401")] == 1
            assert door_counts[("unmatched", "404")] == 1
            items = {
                labels["outcome"]: v
                for labels, v in prom.query('finops_ingest_events_total{endpoint="/v1/usage"}')
            }
            assert items == {"accepted": 3, "rejected": 1}

            prom.until(
                'sum(finops_web_requests_total{job="web",route="/api/alerts"})',
                lambda v: v == 1,
                60,
                "the pages' requests are scraped",
            )
            web = _requests(prom, "web", "finops_web_requests_total")
            assert web[("/api/alerts", "401")] == 1
            assert web[("unmatched", "404")] == 1
            assert not any("wp-admin" in route for route, _ in web)
