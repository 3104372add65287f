"""`finops prices import-litellm` and `finops prices sync` against a real
PostgreSQL: the import lists what it cannot price and which versions are
new; a sync adds versions, effective now, only for what a newer map
changed, and the cost of earlier usage stays what it was."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

MAP = {
    "sample_spec": {"input_cost_per_token": 0},
    "model-a": {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "model-b": {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "litellm_provider": "anthropic",
        "mode": "chat",
    },
    "an-image-model": {
        "output_cost_per_image": 0.04,
        "litellm_provider": "openai",
        "mode": "image_generation",
    },
}


def _event(i: int, model: str, provider: str) -> str:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "ts": "2025-11-01T10:00:00Z",
            "tenant": "t",
            "route": f"/r{i}",
            "feature": "f",
            "model": model,
            "provider": provider,
            "node_id": "n",
            "request_id": f"r{i}",
            "attempt": 1,
            "input_tokens": 1000,
            "output_tokens": 100,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "batch": False,
            "status": "ok",
        }
    )


def test_import_then_sync_adds_only_what_changed(env: Env, tmp_path: Path) -> None:
    (tmp_path / "map.json").write_text(json.dumps(MAP))
    out = env.finops(
        "prices",
        "import-litellm",
        str(tmp_path / "map.json"),
        "--effective-from",
        "2025-01-01T00:00:00Z",
    ).stdout
    assert "mode image_generation" in out and "new model-b/anthropic from 200,001" in out
    assert env.query("SELECT count(*) FROM price_book") == [(3,)]
    (tmp_path / "e.jsonl").write_text(
        _event(1, "model-a", "openai") + "\n" + _event(2, "model-b", "anthropic") + "\n"
    )
    env.finops("replay", str(tmp_path / "e.jsonl"))
    env.finops("worker", "--drain")
    before = dict(env.query("SELECT route, cost_usd FROM spend_window"))

    newer = {**MAP, "model-a": {**MAP["model-a"], "output_cost_per_token": 4e-06}}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    dry = env.finops("prices", "sync", str(tmp_path / "newer.json"), "--dry-run").stdout
    assert "output_per_mtok" in dry and "dry run: nothing loaded" in dry
    assert env.query("SELECT count(*) FROM price_book") == [(3,)]

    out = " ".join(env.finops("prices", "sync", str(tmp_path / "newer.json")).stdout.split())
    assert "0 new keys, 1 changed rates, 1 keys unchanged" in out, out[-400:]
    rows = env.query(
        "SELECT model, output_per_mtok FROM price_book WHERE source LIKE 'litellm-sync%%'"
    )
    assert rows == [("model-a", Decimal(4))]
    # History is not re-priced, and a second sync has nothing to do.
    assert dict(env.query("SELECT route, cost_usd FROM spend_window")) == before
    again = env.finops("prices", "sync", str(tmp_path / "newer.json")).stdout
    assert "nothing to load" in again
