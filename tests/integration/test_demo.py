"""The README's first command, as a user runs it: no URLs set, a private home."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pipeline.testbed.demo_hours import DemoRun, HeldHour
from pipeline.testbed.demo_store import claim_hour, demo_at, mark_published
from pipeline.testbed.simulate.usage import TENANTS, THRASHER
from tests.integration.conftest import Env, private_env, run_cli

pytestmark = pytest.mark.integration

# Rows of the shared cache hit-rate table: bucket, layer, hits, misses, rate.
_RATE_ROW = re.compile(
    r"│ (\d{4}-\d\d-\d\d \d\d:\d\d) │ (\w+) +│ +([\d,]+) │ +([\d,]+) │ +(\d+)% │"
)


def _hit_rates(out: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in _RATE_ROW.finditer(out)]


def _clear_of_the_hour_boundary(needed_s: float) -> None:
    """The demo simulates the last whole hour by the wall clock; runs that
    must meet the same hour wait for the next one if this one ends too soon."""
    now = datetime.now(UTC)
    left = (now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - now).seconds
    if left < needed_s:
        time.sleep(left + 1)


def test_demo_starts_everything_and_prints_per_tenant_spend(tmp_path: Path) -> None:
    env = private_env(tmp_path / "home")
    _clear_of_the_hour_boundary(150)
    try:
        out = run_cli(("demo", "--rate", "3"), env, timeout=400).stdout
        assert "Spend" in out and "total cost: $" in out
        tenants = [t for t in TENANTS if t in out]
        assert len(tenants) >= 10, out
        # Energy per model (measured for the self-hosted ones) and the cache.
        assert "Energy and carbon per token" in out and "qwen3-32b" in out and "measured" in out
        assert "Shared cache hit rate" in out
        # Carbon per token, and what the caches saved in dollars.
        assert "gCO2e" in out and "fleet SCI" in out and "unlocated" not in out
        assert "Dollars saved" in out
        # The plain hour has no thrash: the evictors table says why it is empty.
        assert "no tenant evicted another tenant's entries" in out
        status = run_cli(("status",), env).stdout
        assert '"running": true' in status

        # Again, within the hour: shown, not published again. Cache events
        # carry no id, so a second publication would double these counts.
        again = run_cli(("demo", "--rate", "3"), env, timeout=400).stdout
        assert "already holds this demo" in again and "simulating" not in again
        assert _hit_rates(again) == _hit_rates(out) != []
        # Other settings are refused, not mixed into the same hour.
        other = run_cli(("demo", "--rate", "3", "--incident", "cache-thrash"), env, check=False)
        assert other.returncode == 1
        # (rich wraps long lines at the terminal's width)
        refusal = " ".join(other.stdout.split())
        assert (
            "already holds the demo with --rate 3.0; a demo with"
            " --rate 3.0 --incident cache-thrash needs an hour of its own"
        ) in refusal
    finally:
        run_cli(("down",), env, check=False)


def test_demo_with_the_cache_thrash_incident_names_the_evicting_tenant(tmp_path: Path) -> None:
    env = private_env(tmp_path / "home")
    try:
        args = ("demo", "--rate", "3", "--incident", "cache-thrash")
        out = run_cli(args, env, timeout=400).stdout
        assert "with the cache-thrash incident" in out
        # The shared prefix hit rate falls from about 70% to about 20% and
        # recovers after the incident.
        prefix = [int(rate) for _, layer, _, _, rate in _hit_rates(out) if layer == "prefix"]
        assert len(prefix) == 6, out
        assert prefix[0] >= 60 and min(prefix) <= 25 and prefix[-1] >= 60, prefix
        # The newcomer is the top evictor, against every other tenant.
        evictors = out.split("Top evictors")[1]
        rows = re.findall(r"│ (\S+) +│ (\S+) +│ +([\d,]+) │", evictors)
        assert rows and all(evicting == THRASHER for evicting, _, _ in rows), rows
        assert {evicted for _, evicted, _ in rows} == set(TENANTS) - {THRASHER}
    finally:
        run_cli(("down",), env, check=False)


def test_a_demo_cut_short_is_not_published_again(env: Env, engine: Engine) -> None:
    """The hour is claimed before its traffic is published and complete only
    after: a demo that died in between left an unknown part of the hour, and
    a re-run refuses rather than send it twice."""
    env.finops("db", "upgrade")
    run = DemoRun(Decimal("3.0"), None)
    _clear_of_the_hour_boundary(60)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    assert claim_hour(engine, hour, run)
    assert not claim_hour(engine, hour, DemoRun(Decimal("3.0"), "cache-thrash"))
    assert demo_at(engine, hour) == HeldHour(run, complete=False)

    again = env.finops("demo", "--rate", "3", check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "did not finish" in " ".join(again.stdout.split())
    assert env.query("SELECT count(*) FROM spend_window") == [(0,)]

    mark_published(engine, hour)
    assert demo_at(engine, hour) == HeldHour(run, complete=True)
