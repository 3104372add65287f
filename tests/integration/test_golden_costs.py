"""Golden vectors from the cost bugs peers shipped, through the real
pipeline: a provider's usage object as its API returns it, normalised
(models/usage.py), published, priced by the worker and stored, to the last
digit. The prices are the providers' published list prices; each expected
cost is worked by hand in its comment."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.prices import CSV_HEADER
from models.usage import anthropic_messages, gemini
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

PRICES = f"""{CSV_HEADER}
claude-sonnet-4-5,anthropic,,standard,0,2025-09-29T00:00:00Z,3,15,0.30,3.75,6,,0
claude-sonnet-4-5,anthropic,,standard,200001,2025-09-29T00:00:00Z,6,22.50,0.60,7.50,12,,0
gemini-2.5-pro,gemini,,standard,0,2025-06-17T00:00:00Z,1.25,10,0.125,1.25,,,0
gemini-2.5-pro,gemini,,standard,200001,2025-06-17T00:00:00Z,2.50,15,0.25,2.50,,,0
"""

# An Anthropic stream: message_start carries the input and cache counts,
# message_delta the cumulative output; merged, the delta wins.
STREAM_START = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 20480,
    "output_tokens": 1,
}
STREAM_DELTA = {"output_tokens": 731}

VECTORS: dict[str, tuple[Any, str, dict[str, str]]] = {
    # 12 x 3 + 20,480 x 0.30 + 731 x 15 = 36 + 6,144 + 10,965 per Mtok. The
    # bug: cached tokens billed as input, 20,492 x 3 + ... = $0.072441.
    "cached anthropic stream": (
        anthropic_messages({**STREAM_START, **STREAM_DELTA}),
        "claude-sonnet-4-5",
        {"cost_usd": "0.017145", "cache_read_cost_usd": "0.006144"},
    ),
    # 1,500 x 1.25 + (420 + 3,180 thoughts) x 10 = 1,875 + 36,000 per Mtok.
    # The bug: thoughts dropped, $0.006075 (6.2x too low).
    "gemini with thoughts": (
        gemini(
            {
                "promptTokenCount": 1500,
                "candidatesTokenCount": 420,
                "thoughtsTokenCount": 3180,
                "totalTokenCount": 5100,
            }
        ),
        "gemini-2.5-pro",
        {"cost_usd": "0.037875", "reasoning_cost_usd": "0.0318", "output_cost_usd": "0.0042"},
    ),
    # 250,000 prompt tokens (230,000 + 20,000 read) is above 200,000: every
    # rate switches. 230,000 x 6 + 20,000 x 0.60 + 4,000 x 22.50
    # = 1,380,000 + 12,000 + 90,000 per Mtok.
    "claude prompt above 200k": (
        anthropic_messages(
            {
                "input_tokens": 230_000,
                "cache_read_input_tokens": 20_000,
                "cache_creation_input_tokens": 0,
                "output_tokens": 4000,
            }
        ),
        "claude-sonnet-4-5",
        {"cost_usd": "1.482"},
    ),
    # Exactly 200,000 is not above it: 200,000 x 3 + 10 x 15 per Mtok.
    "claude prompt of exactly 200k": (
        anthropic_messages({"input_tokens": 200_000, "output_tokens": 10}),
        "claude-sonnet-4-5",
        {"cost_usd": "0.60015"},
    ),
    # 40 x 3 + 2,000 x 3.75 (5m) + 10,000 x 6 (1h) + 300 x 15
    # = 120 + 7,500 + 60,000 + 4,500 per Mtok. The bug: every write at the
    # 5m rate, $0.04962.
    "1h cache write": (
        anthropic_messages(
            {
                "input_tokens": 40,
                "cache_creation_input_tokens": 12_000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 2000,
                    "ephemeral_1h_input_tokens": 10_000,
                },
                "output_tokens": 300,
            }
        ),
        "claude-sonnet-4-5",
        {
            "cost_usd": "0.07212",
            "cache_write_1h_cost_usd": "0.06",
            "cache_write_5m_cost_usd": "0.0075",
        },
    ),
}
PROVIDERS = {"claude-sonnet-4-5": "anthropic", "gemini-2.5-pro": "gemini"}


def test_golden_vectors_cost_exactly_what_the_provider_bills(env: Env, tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text(PRICES)
    lines = []
    for i, (name, (usage, model, _)) in enumerate(VECTORS.items()):
        lines.append(
            json.dumps(
                {
                    "event_id": f"golden-{i}",
                    "ts": "2025-11-01T10:00:00Z",
                    "tenant": "golden",
                    "route": name,
                    "feature": "vectors",
                    "model": model,
                    "provider": PROVIDERS[model],
                    "node_id": "gw",
                    "request_id": f"r{i}",
                    "attempt": 1,
                    "batch": False,
                    "status": "ok",
                    **usage.fields(),
                }
            )
        )
    (tmp_path / "golden.jsonl").write_text("\n".join(lines) + "\n")
    env.finops("prices", "load", str(tmp_path / "prices.csv"))
    env.finops("replay", str(tmp_path / "golden.jsonl"))
    env.finops("worker", "--drain")
    columns = sorted({c for _, _, expected in VECTORS.values() for c in expected})
    rows = env.query(f"SELECT route, {', '.join(columns)} FROM spend_window")
    stored = {str(r[0]): dict(zip(columns, r[1:], strict=True)) for r in rows}
    assert set(stored) == set(VECTORS)
    for name, (_, _, expected) in VECTORS.items():
        for column, value in expected.items():
            assert stored[name][column] == Decimal(value), (name, column)

    # Month close: the kinds are SKUs of their own, in FOCUS and on the page.
    env.finops("month", "close", "2025-11", "--out", str(tmp_path / "docs"))
    focus = (tmp_path / "docs" / "2025-11" / "focus-2025-11.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(focus)))
    usage = [r for r in rows if r["ChargeCategory"] == "Usage"]
    by_sku = {(r["SubAccountId"], r["SkuId"]): r for r in usage}
    one_hour = by_sku[("1h cache write", "anthropic/claude-sonnet-4-5/cache-write-1h")]
    assert Decimal(one_hour["EffectiveCost"]) == Decimal("0.06")
    assert Decimal(one_hour["ConsumedQuantity"]) == 10_000
    # At the rate card: the 1h rate of the smallest prompts.
    assert Decimal(one_hour["ListUnitPrice"]) == 6
    thinking = by_sku[("gemini with thoughts", "gemini/gemini-2.5-pro/reasoning")]
    assert Decimal(thinking["EffectiveCost"]) == Decimal("0.0318")
    assert sum(Decimal(r["EffectiveCost"]) for r in usage) == sum(
        Decimal(e["cost_usd"]) for _, _, e in VECTORS.values()
    )
    page = next((tmp_path / "docs" / "2025-11").glob("chargeback-2025-11-golden*.html")).read_text()
    assert "anthropic/claude-sonnet-4-5/cache-write-1h" in page
    assert "gemini/gemini-2.5-pro/reasoning" in page


def test_a_late_v2_price_reprices_every_kind_exactly(env: Env, tmp_path: Path) -> None:
    """An event whose model has no price yet is stored unpriced with all its
    kinds and tier; the price's arrival costs it as the stream would have."""
    usage = anthropic_messages(
        {
            "input_tokens": 230_000,
            "cache_read_input_tokens": 20_000,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 2000,
            },
            "output_tokens": 4000,
            "output_tokens_details": {"thinking_tokens": 1000},
            "service_tier": "priority",
        }
    )
    line = {
        "event_id": "late-1",
        "ts": "2025-11-01T10:00:00Z",
        "tenant": "golden",
        "route": "late",
        "feature": "vectors",
        "model": "claude-late",
        "provider": "anthropic",
        "node_id": "gw",
        "request_id": "r",
        "attempt": 1,
        "batch": False,
        "status": "ok",
        **usage.fields(),
    }
    (tmp_path / "late.jsonl").write_text(json.dumps(line) + "\n")
    env.finops("replay", str(tmp_path / "late.jsonl"))
    env.finops("worker", "--drain")
    assert env.query("SELECT cost_usd, unpriced_attempts FROM spend_window") == [(0, 1)]
    # The priority tier's long-context entry prices it: 253,000 prompt tokens.
    (tmp_path / "late.csv").write_text(
        f"{CSV_HEADER}\n"
        "claude-late,anthropic,,standard,0,2025-01-01T00:00:00Z,3,15,0.30,3.75,6,,0\n"
        "claude-late,anthropic,,priority,0,2025-01-01T00:00:00Z,5,25,0.5,6.25,10,30,0\n"
        "claude-late,anthropic,,priority,200001,2025-01-01T00:00:00Z,10,50,1,12.5,20,60,0\n"
    )
    env.finops("prices", "load", str(tmp_path / "late.csv"))
    ((cost, unpriced, read, w5, w1h, out, thinking, listed),) = env.query(
        "SELECT cost_usd, unpriced_attempts, cache_read_cost_usd, cache_write_5m_cost_usd,"
        " cache_write_1h_cost_usd, output_cost_usd, reasoning_cost_usd, list_cost_usd"
        " FROM spend_window"
    )
    # 230,000 x 10 + 20,000 x 1 + 1,000 x 12.5 + 2,000 x 20 + 3,000 x 50
    # + 1,000 x 60 per Mtok; listed at the standard tier's rates.
    assert (read, w5, w1h, out, thinking) == (
        Decimal("0.02"),
        Decimal("0.0125"),
        Decimal("0.04"),
        Decimal("0.15"),
        Decimal("0.06"),
    )
    assert (cost, unpriced) == (Decimal("2.5825"), 0)
    # 230,000 x 3 + 20,000 x 0.30 + 1,000 x 3.75 + 2,000 x 6 + 4,000 x 15
    assert listed == Decimal("0.77175")
