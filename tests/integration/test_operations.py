"""Operating the guarantees from the command line: reconcile against the
ledger, review and replay dead letters, read the metrics."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.stream.kafka import bootstrap
from tests.factories import event, line
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def _ts(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def _setup(env: Env, tmp_path: Path, lines: list[bytes]) -> None:
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    env.load_default_prices()
    env.finops("replay", str(tmp_path / "events.jsonl"))


def test_reconcile_names_a_window_that_differs_from_the_ledger(env: Env, tmp_path: Path) -> None:
    evs = [
        event(event_id=f"e{i}", tenant=f"t{i % 3}", ts=_ts(-timedelta(minutes=i)))
        for i in range(30)
    ]
    _setup(env, tmp_path, [line(e) for e in evs] + [line(evs[0]), b"not json"])
    env.finops("worker", "--drain")

    clean = env.finops("reconcile", "--ledger")
    assert "reconcile: equal lost=0 double_counted=0" in clean.stdout
    assert "balanced=yes" in clean.stdout

    env.query(
        "UPDATE spend_window SET cost_usd = cost_usd + 0.01, attempts = attempts + 1"
        " WHERE tenant = 't1' RETURNING 1"
    )
    tampered = env.finops("reconcile", "--ledger", check=False)
    assert tampered.returncode == 1
    assert "reconcile: DIFFERENT" in tampered.stdout and "double_counted=" in tampered.stdout
    assert "t1" in tampered.stdout and "cost_usd" in tampered.stdout
    assert "double_counted=0" not in tampered.stdout


def test_dead_letters_are_reviewed_then_replayed_once(env: Env, tmp_path: Path) -> None:
    recent = [event(event_id=f"r{i}", ts=_ts(-timedelta(hours=1))) for i in range(3)]
    old = event(event_id="old", ts=_ts(-timedelta(days=100)), input_tokens=1234)
    _setup(env, tmp_path, [line(e) for e in [*recent, old]])
    telemetry = f"{env.topic}-telemetry"
    (tmp_path / "gpu.jsonl").write_bytes(b'{"node_id": "n1", "gpu": "0"}\n')
    env.finops("replay", str(tmp_path / "gpu.jsonl"), "--topic", telemetry)
    strict = {"FINOPS_MAX_EVENT_AGE_DAYS": "35"}
    env.finops("worker", "--drain", extra=strict)
    assert env.query("SELECT sum(attempts) FROM spend_window") == [(3,)]
    listing = env.finops("dead-letters", "list").stdout
    assert "ts_too_old" in listing and telemetry in listing

    # A dead letter goes back to the topic it came from, and only that one
    # when a topic is named.
    replayed = env.finops("dead-letters", "replay", "--reason", "schema", "--topic", env.topic)
    assert "re-published 0" in replayed.stdout
    replayed = env.finops("dead-letters", "replay", "--reason", "schema")
    assert f"re-published 1 dead letters with reason 'schema' to '{telemetry}'" in replayed.stdout

    # After review: replay under bounds widened for this backfill. Twice: the
    # second replay finds nothing left to send.
    assert "re-published 1" in env.finops("dead-letters", "replay", "--reason", "ts_too_old").stdout
    assert "re-published 0" in env.finops("dead-letters", "replay", "--reason", "ts_too_old").stdout
    env.finops("worker", "--drain", extra={"FINOPS_MAX_EVENT_AGE_DAYS": "3650"})
    assert env.query("SELECT sum(attempts), sum(input_tokens) FROM spend_window") == [
        (4, 3 * 4000 + 1234)
    ]

    metrics = env.finops("metrics").stdout
    assert 'finops_dead_letters{reason="ts_too_old"' in metrics
    assert 'finops_dead_letters_replayed{reason="ts_too_old"' in metrics
    accepted = sum(
        float(row.rsplit(" ", 1)[1])
        for row in metrics.splitlines()
        if row.startswith("finops_events_accepted_total")
    )
    assert accepted == 4


def test_bench_measures_its_shapes_and_leaves_no_topics_behind(env: Env) -> None:
    """A small `finops bench` end to end: every shape drains every event, the
    last lines are the joins ratios, the spend path's freshness is measured
    under a steady load, and its topics and databases are gone
    after (the embedded broker keeps every message in memory until then).
    Rounds only repeat this (tests/unit/test_bench_summary.py)."""
    out = env.finops(
        "bench",
        "--events",
        "3000",
        "--shapes",
        "batched,joined,per-op",
        "--rounds",
        "1",
        "--paced-s",
        "2",
        timeout=600,
    )
    cells = _cells(out.stdout)
    rows = [c for c in cells if len(c) == 9]
    assert [r[0] for r in rows] == ["batched", "joined", "per-op"]
    assert all(r[1] == "3,000" for r in rows)
    # Where the time went: every agent of each shape, and between them every
    # message of the shape committed exactly once.
    busy = [c for c in cells if len(c) == 6]
    assert sorted((b[0], b[1]) for b in busy) == [
        ("batched", "spend"),
        ("joined", "cache"),
        ("joined", "spend"),
        ("joined", "telemetry"),
        ("per-op", "cache"),
        ("per-op", "spend"),
        ("per-op", "telemetry"),
    ]
    for shape, _, messages, *_ in rows:
        committed = sum(int(b[3].replace(",", "")) for b in busy if b[0] == shape)
        assert committed == int(messages.replace(",", ""))
    # CPU per million events beside the raw consumer's, and the workers'
    # memory: a worker's imports alone hold over 100 MB resident.
    cpu = [c for c in cells if len(c) == 8]
    assert [c[0] for c in cpu] == ["batched", "joined", "per-op"]
    # (PostgreSQL's and the broker's are n/a here: not the embedded stack's.)
    for _, _, raw_cpu, worker_cpu, *_, rss_peak, _ in cpu:
        assert float(raw_cpu.replace(",", "")) > 0 and float(worker_cpu.replace(",", "")) > 0
        assert 100 < float(rss_peak.replace(",", "")) < 4000
    # Freshness under a steady load at half the measured rate, for the spend
    # path alone: every paced event applied, its quantiles from the worker's
    # own histogram.
    fresh = [c for c in cells if len(c) == 7]
    assert [f[0] for f in fresh] == ["batched"]
    (_, paced_rate, paced, p50, p99, within, under_1s) = fresh[0]
    batched_rate = int(rows[0][4].replace(",", ""))
    assert abs(float(paced_rate.replace(",", "")) - batched_rate / 2) <= 1
    assert 0 < int(paced.replace(",", "")) <= 3000
    assert 0 < float(p50) <= float(p99) <= float(within)
    assert under_1s == ("yes" if float(p99) < 1 else "no")
    ratio = re.search(
        r"joins ratio \(joined / spend path alone, pipeline rates\): ([\d.]+)$", out.stdout, re.M
    )
    assert ratio is not None and float(ratio.group(1)) > 0
    per_op = re.search(r"joins ratio, per-op \(per-op / spend path alone", out.stdout)
    assert per_op is not None
    # Counters (the joined shape) carry the same operations in fewer lines.
    lines = {r[0]: int(r[5].replace(",", "")) for r in rows}
    seconds = {r[0]: 3000 / int(r[4].replace(",", "")) for r in rows}
    assert lines["joined"] * seconds["joined"] < lines["per-op"] * seconds["per-op"]

    assert _bench_leftovers(env) == ([], [])


def _cells(stdout: str) -> list[list[str]]:
    """The cells of every row of the rich tables a command printed."""
    return [
        [c.strip() for c in r.split("│")[1:-1]] for r in stdout.splitlines() if r.startswith("│")
    ]


def _bench_leftovers(env: Env) -> tuple[list[str], list[tuple[str]]]:
    """The topics and databases a bench or soak left behind."""

    async def bench_topics() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(env.kafka_url))
        await admin.start()
        try:
            return [t for t in await admin.list_topics() if t.startswith("bench-")]
        finally:
            await admin.close()

    bench_dbs = "SELECT datname FROM pg_database WHERE starts_with(datname, %s)"
    return asyncio.run(bench_topics()), env.query(bench_dbs, ("finops_bench_",))


def test_soak_drains_every_event_over_many_keys_and_shows_the_workers_memory(env: Env) -> None:
    """A small `finops soak`: its events are generated as they are published,
    spread over many tenants' keys, all applied, and the worker's memory is
    shown at each tenth of its run; nothing is left behind."""
    out = env.finops("soak", "--events", "4000", "--tenants", "300", timeout=600)
    published = re.search(r"published ([\d,]+) events of ([\d,]+) distinct", out.stdout)
    assert published is not None
    assert published.group(1) == "4,000"
    assert int(published.group(2).replace(",", "")) > 300  # several keys a tenant
    rows = _cells(out.stdout)
    assert [r[0] for r in rows] == [f"{t}%" for t in range(10, 101, 10)]
    # Sampled from the worker's start; its imports alone hold over 100 MB.
    mb = [float(r[1].replace(",", "")) for r in rows]
    assert all(m > 10 for m in mb) and 100 < max(mb) < 4000
    assert _bench_leftovers(env) == ([], [])


def _refuse_spend_commits(env: Env) -> None:
    """Every spend commit refused where no line explains it (advancing the
    offsets), so the sink retries it rather than isolate lines."""
    with psycopg.connect(env.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON sink_offset FOR EACH ROW"
            " WHEN (NEW.sink = 'spend' AND NEW.next_offset > OLD.next_offset)"
            " EXECUTE FUNCTION refuse()"
        )


def _spend_offsets(env: Env) -> list[tuple[object, ...]]:
    return env.query("SELECT sum(next_offset) FROM sink_offset WHERE sink = 'spend'")


def test_a_drain_told_to_stop_before_it_caught_up_exits_75(env: Env, tmp_path: Path) -> None:
    """SIGTERM in the middle of a drain (a batch taken, its commit being
    retried) is a clean stop, but not a finished drain: exit 75, not the 0
    that tells a caller every partition caught up."""
    _setup(
        env,
        tmp_path,
        [line(event(event_id=f"e{i}", ts=_ts(-timedelta(minutes=2)))) for i in range(5)],
    )
    _refuse_spend_commits(env)
    proc = env.spawn("worker", "--drain")
    timer = threading.Timer(180, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        seen = []
        for out in proc.stdout:
            seen.append(out)
            if "fault sink_error" in out:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        timer.cancel()
        if proc.poll() is None:  # a failed test leaves no worker behind
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert "fault sink_error" in output, output
    assert proc.returncode == 75, output
    assert _spend_offsets(env) in ([(0,)], [(None,)])


def test_a_drain_that_cannot_advance_gives_up_instead_of_waiting_forever(
    env: Env, tmp_path: Path
) -> None:
    """Every spend commit fails (a trigger refuses the windows), so the sink
    retries and no offset advances: after FINOPS_DRAIN_STALL_S the drain says
    so and exits 75, with nothing committed, so running it again is safe."""
    _setup(
        env,
        tmp_path,
        [line(event(event_id=f"e{i}", ts=_ts(-timedelta(minutes=3)))) for i in range(5)],
    )
    _refuse_spend_commits(env)
    done = env.finops(
        "worker", "--drain", check=False, timeout=120, extra={"FINOPS_DRAIN_STALL_S": "5"}
    )
    assert done.returncode == 75, done.stdout + done.stderr
    assert "drain stalled" in done.stderr
    assert _spend_offsets(env) in ([(0,)], [(None,)])
