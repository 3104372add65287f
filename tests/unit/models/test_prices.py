import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from models.litellm_prices import parse_litellm
from models.prices import (
    CSV_HEADER_V1,
    PriceBook,
    PriceEntry,
    parse_csv,
    parse_yaml,
    to_csv,
)

CSV = f"""{CSV_HEADER_V1}
m,p,2025-01-01T00:00:00Z,1.00,2.00,0.10,1.25,0.5
m,p,2025-06-01T00:00:00+02:00,0.50,1.00,0.05,0.625,0
"""


def test_csv_versions_and_as_of_lookup() -> None:
    book = PriceBook(tuple(parse_csv(CSV)))
    assert book.price_at("m", "p", datetime(2024, 12, 31, tzinfo=UTC)) is None
    first = book.price_at("m", "p", datetime(2025, 5, 31, 21, 59, tzinfo=UTC))
    second = book.price_at("m", "p", datetime(2025, 5, 31, 22, 0, tzinfo=UTC))
    assert first is not None and first.input_per_mtok == Decimal("1.00")
    assert second is not None and second.input_per_mtok == Decimal("0.50")
    assert book.price_at("m", "other-provider", datetime(2025, 7, 1, tzinfo=UTC)) is None


def test_csv_header_must_match() -> None:
    with pytest.raises(ValueError, match="header"):
        parse_csv("model,provider\nm,p\n")


@pytest.mark.parametrize("bad", ["-1", "abc", "0.0000001", "NaN"])
def test_csv_rejects_bad_prices_with_line_number(bad: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_csv(f"{CSV_HEADER_V1}\nm,p,2025-01-01T00:00:00Z,{bad},1,1,1,0\n")


def test_naive_effective_from_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_csv(f"{CSV_HEADER_V1}\nm,p,2025-01-01T00:00:00,1,1,1,1,0\n")


def test_yaml_keeps_decimals_exact() -> None:
    entries = parse_yaml(
        "prices:\n  - model: m\n    provider: p\n    effective_from: 2025-01-01T00:00:00Z\n"
        "    input_per_mtok: 0.1\n    output_per_mtok: 0.3\n    cache_read_per_mtok: 0.01\n"
        "    cache_write_per_mtok: 0.1\n    batch_discount: 0.5\n"
    )
    assert entries[0].input_per_mtok == Decimal("0.1")
    assert entries[0].output_per_mtok == Decimal("0.3")


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _import(**specs: dict[str, object]) -> dict[tuple[str, str, str, int], PriceEntry]:
    result = parse_litellm(json.dumps(specs), T0)
    return {(e.model, e.region, e.service_tier, e.from_input_tokens): e for e in result.entries}


def test_litellm_import_never_uses_floats() -> None:
    doc = {
        "sample_spec": {"input_cost_per_token": 0},
        "claude-sonnet-4-5": {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "input_cost_per_token_batches": 1.5e-06,
            "output_cost_per_token_batches": 7.5e-06,
            "litellm_provider": "anthropic",
            "mode": "chat",
        },
        "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai"},
    }
    result = parse_litellm(json.dumps(doc), T0)
    standard, batch = sorted(result.entries, key=lambda e: e.service_tier != "standard")
    assert standard.input_per_mtok == Decimal("3")
    assert standard.cache_read_per_mtok == Decimal("0.3")
    assert standard.cache_write_per_mtok == Decimal("3.75")
    assert standard.cache_write_1h_per_mtok == Decimal("6")
    assert standard.provider == "anthropic"
    assert (batch.service_tier, batch.input_per_mtok, batch.output_per_mtok) == (
        "batch",
        Decimal("1.5"),
        Decimal("7.5"),
    )
    assert "dall-e-3" in result.skipped


def test_a_threshold_switches_every_rate_above_it_and_xai_at_it() -> None:
    spec = {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "mode": "chat",
    }
    got = _import(
        claude={**spec, "litellm_provider": "vertex_ai-anthropic_models"},
        grok={**spec, "litellm_provider": "xai"},
    )
    above = got[("claude", "", "standard", 200_001)]
    assert above.input_per_mtok == Decimal(6)
    assert above.output_per_mtok == Decimal("22.5")
    # No long-context cache read rate: the flat one stays.
    assert above.cache_read_per_mtok == Decimal("0.3")
    assert ("grok", "", "standard", 200_000) in got
    book = PriceBook(
        tuple(parse_litellm(json.dumps({"c": {**spec, "litellm_provider": "x"}}), T0).entries)
    )
    at, over = (book.rate("c", "x", T0, input_tokens=n) for n in (200_000, 200_001))
    assert at is not None and over is not None
    assert book.entries[at.price_id].input_per_mtok == Decimal(3)
    assert book.entries[over.price_id].input_per_mtok == Decimal(6)


def test_tiers_regions_ranges_and_aliases() -> None:
    got = _import(
        **{
            "gpt-x": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 8e-06,
                "input_cost_per_token_priority": 2e-06,
                "input_cost_per_token_flex": 5e-07,
                "output_cost_per_token_flex": 4e-06,
                "litellm_provider": "openai",
                "mode": "chat",
            },
            "gpt-x-latest": {"alias_of": "gpt-x"},
            "bedrock/ap-south-1/meta.llama": {
                "input_cost_per_token": 3.6e-06,
                "output_cost_per_token": 3.6e-06,
                "litellm_provider": "bedrock",
                "mode": "chat",
            },
            "qwen": {
                "tiered_pricing": [
                    {
                        "range": [0, 32000],
                        "input_cost_per_token": 1e-06,
                        "output_cost_per_token": 2e-06,
                    },
                    {
                        "range": [32000, 128000],
                        "input_cost_per_token": 2e-06,
                        "output_cost_per_token": 4e-06,
                    },
                ],
                "litellm_provider": "volcengine",
                "mode": "chat",
            },
        }
    )
    priority = got[("gpt-x", "", "priority", 0)]
    assert priority.input_per_mtok == Decimal(2)
    assert priority.output_per_mtok == Decimal(8)  # standard's
    assert got[("gpt-x", "", "flex", 0)].output_per_mtok == Decimal(4)
    assert ("gpt-x-latest", "", "priority", 0) in got
    assert ("meta.llama", "ap-south-1", "standard", 0) in got
    assert got[("qwen", "", "standard", 32_001)].input_per_mtok == Decimal(2)


def test_v2_csv_round_trips_and_v1_still_loads() -> None:
    v1 = parse_csv(CSV)
    assert parse_csv(to_csv(v1)) == v1
    tiered = list(
        _import(
            m={
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06,
                "input_cost_per_token_above_128k_tokens": 2e-06,
                "litellm_provider": "gemini",
                "mode": "chat",
            }
        ).values()
    )
    assert len(tiered) == 2
    assert parse_csv(to_csv(tiered)) == tiered
