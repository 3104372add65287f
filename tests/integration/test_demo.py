"""The README's first command, as a user runs it: no URLs set, a private home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.simulate import TENANTS
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def test_demo_starts_everything_and_prints_per_tenant_spend(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
    env["FINOPS_HOME"] = str(tmp_path / "home")
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
    finally:
        run_cli(("down",), env, check=False)
