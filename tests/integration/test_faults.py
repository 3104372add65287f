"""The fault suite in CI: every ``finops chaos`` scenario, smaller, against
the session's real broker and PostgreSQL. Each must lose nothing, count
nothing twice, and leave every table equal to the ledger recomputed from the
log; each also shows that its fault really happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.testbed.chaos.harness import Target
from pipeline.testbed.chaos.run import run_scenario
from pipeline.testbed.chaos.scenarios import JOINED, Intensity
from pipeline.testbed.chaos.verdict import Verdict
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 3000
GENTLE = Intensity(kills=3, stall_s=10, traffic_s=15)


def _run(stack: Stack, tmp_path: Path, name: str, events: int = EVENTS) -> Verdict:
    target = Target(stack.kafka_url, stack.admin_url, stack.broker_pid, stack.pgdata)
    verdict = run_scenario(target, name, events, seed=3, intensity=GENTLE, workdir=tmp_path / name)
    print("\n".join([*verdict.details, verdict.line()]))
    assert (verdict.lost, verdict.double_counted) == (0, 0), verdict.details
    assert verdict.tables_equal and verdict.balanced, verdict.details
    assert verdict.leaks == []
    if name in JOINED:  # its telemetry and cache windows, held to the reference
        assert (verdict.energy_ok, verdict.cache_ok) == (True, True), verdict.details
    assert verdict.ok
    return verdict


def test_kill_worker(stack: Stack, tmp_path: Path) -> None:
    verdict = _run(stack, tmp_path, "kill-worker")
    # Both exact fault points fired (the hook SIGKILLs its own worker).
    assert verdict.restarts >= 2


def test_sink_error(stack: Stack, tmp_path: Path) -> None:
    assert _run(stack, tmp_path, "sink-error").faults.get("postgres_unavailable", 0) > 0


def test_rebalance(stack: Stack, tmp_path: Path) -> None:
    # Workers leaving the group on SIGTERM shut down cleanly (exit 0).
    assert _run(stack, tmp_path, "rebalance").unclean_stops == []


def test_broker_stall(stack: Stack, tmp_path: Path) -> None:
    _run(stack, tmp_path, "broker-stall")


def test_worker_stall(stack: Stack, tmp_path: Path) -> None:
    _run(stack, tmp_path, "worker-stall")


def test_postgres_restart(stack: Stack, tmp_path: Path) -> None:
    assert _run(stack, tmp_path, "postgres-restart").faults.get("postgres_unavailable", 0) > 0


def test_producer_resend(stack: Stack, tmp_path: Path) -> None:
    verdict = _run(stack, tmp_path, "producer-resend")
    assert verdict.duplicates == 2 * (EVENTS // 10)


def test_replay(stack: Stack, tmp_path: Path) -> None:
    _run(stack, tmp_path, "replay")


def test_poison(stack: Stack, tmp_path: Path) -> None:
    verdict = _run(stack, tmp_path, "poison")
    assert verdict.dead_lettered >= 12
    assert verdict.faults.get("conflict", 0) >= 1
