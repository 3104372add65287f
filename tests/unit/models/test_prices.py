import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from models.prices import CSV_HEADER, PriceBook, parse_csv, parse_litellm, parse_yaml

CSV = f"""{CSV_HEADER}
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
        parse_csv(f"{CSV_HEADER}\nm,p,2025-01-01T00:00:00Z,{bad},1,1,1,0\n")


def test_naive_effective_from_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_csv(f"{CSV_HEADER}\nm,p,2025-01-01T00:00:00,1,1,1,1,0\n")


def test_yaml_keeps_decimals_exact() -> None:
    entries = parse_yaml(
        "prices:\n  - model: m\n    provider: p\n    effective_from: 2025-01-01T00:00:00Z\n"
        "    input_per_mtok: 0.1\n    output_per_mtok: 0.3\n    cache_read_per_mtok: 0.01\n"
        "    cache_write_per_mtok: 0.1\n    batch_discount: 0.5\n"
    )
    assert entries[0].input_per_mtok == Decimal("0.1")
    assert entries[0].output_per_mtok == Decimal("0.3")


def test_litellm_import_never_uses_floats() -> None:
    doc = {
        "sample_spec": {"input_cost_per_token": 0},
        "claude-sonnet-4-5": {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
            "input_cost_per_token_batches": 1.5e-06,
            "litellm_provider": "anthropic",
        },
        "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai"},
    }
    result = parse_litellm(json.dumps(doc), datetime(2025, 1, 1, tzinfo=UTC))
    (entry,) = result.entries
    assert entry.input_per_mtok == Decimal("3")
    assert entry.cache_read_per_mtok == Decimal("0.3")
    assert entry.cache_write_per_mtok == Decimal("3.75")
    assert entry.batch_discount == Decimal("0.5")
    assert entry.provider == "anthropic"
    assert "dall-e-3" in result.skipped
