"""The route catalog through the CLI: loaded, read back equal, and a bad
file refused with the path of each bad value, leaving the stored one alone."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import Engine

from models.catalog import parse_yaml
from pipeline.alerts.catalog_store import read_catalog
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def test_catalog_round_trip_and_refusal(env: Env, engine: Engine, tmp_path: Path) -> None:
    out = env.finops("catalog", "load").stdout
    assert "6 routes, 12 rules enabled" in out
    text = resources.files("models").joinpath("data/route_catalog.yaml").read_text()
    parsed = parse_yaml(text)
    # Stored routes come back in name order.
    bundled = parsed.model_copy(
        update={"routes": tuple(sorted(parsed.routes, key=lambda r: r.route))}
    )
    assert read_catalog(engine) == bundled

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "routes:\n  - route: /v1/x\n    token_budget: {input_cap: 0, output_cap: 5}\n"
        "    latency_budget: {p50_ms: 1, p95_ms: 2, p99_ms: 3}\n    max_retries: 1\n"
    )
    refused = env.finops("catalog", "load", str(bad), check=False)
    assert refused.returncode == 1
    assert "routes[0].token_budget.input_cap" in refused.stdout
    assert read_catalog(engine) == bundled  # nothing replaced
    shown = env.finops("catalog", "show").stdout
    assert "/v1/agent" in shown and "tenant_spend_spike" in shown
