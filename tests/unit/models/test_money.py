from decimal import Decimal, Inexact

import pytest

from models.money import KINDS, TokenCounts, check_scale, exact, kind_costs, to_cents
from models.prices import PriceEntry
from tests.factories import event

SONNET = PriceEntry(
    model="claude-4.5-sonnet",
    provider="anthropic",
    effective_from="2025-09-29T00:00:00Z",
    input_per_mtok=Decimal("3"),
    output_per_mtok=Decimal("15"),
    cache_read_per_mtok=Decimal("0.30"),
    cache_write_per_mtok=Decimal("3.75"),
    batch_discount=Decimal("0.5"),
)


def day_cost(cache_read: int) -> Decimal:
    one = SONNET.cost(
        input_tokens=4000,
        output_tokens=500,
        cache_read_tokens=cache_read,
        cache_write_tokens=0,
        batch=False,
    )
    with exact():
        return one * 10_000


def test_worked_example_uncached_day_is_exactly_195_dollars() -> None:
    assert day_cost(0) == Decimal("195")
    assert str(to_cents(day_cost(0))) == "195.00"


def test_worked_example_cached_day_is_exactly_114_dollars() -> None:
    assert day_cost(3000) == Decimal("114")


def test_cost_is_linear_so_summed_tokens_cost_the_sum() -> None:
    e = event()
    single = SONNET.cost(
        input_tokens=e["input_tokens"],
        output_tokens=e["output_tokens"],
        cache_read_tokens=0,
        cache_write_tokens=0,
        batch=False,
    )
    summed = SONNET.cost(
        input_tokens=3 * e["input_tokens"],
        output_tokens=3 * e["output_tokens"],
        cache_read_tokens=0,
        cache_write_tokens=0,
        batch=False,
    )
    assert summed == 3 * single


def test_batch_discount_halves_the_cost() -> None:
    tokens = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_read_tokens": 200,
        "cache_write_tokens": 100,
    }
    full = SONNET.cost(**tokens, batch=False)
    half = SONNET.cost(**tokens, batch=True)
    assert half * 2 == full


RATES = {
    "input_per_mtok": Decimal(3),
    "output_per_mtok": Decimal(15),
    "cache_read_per_mtok": Decimal("0.3"),
    "cache_write_per_mtok": Decimal("3.75"),
}


def test_cache_write_tokens_are_priced_at_the_write_rate() -> None:
    cost = kind_costs(
        TokenCounts(input=1_000_000, output=0, cache_write=1_000_000),
        **RATES,
        cache_write_1h_per_mtok=None,
        reasoning_per_mtok=None,
        discount=Decimal(0),
    )
    assert cost.total == cost.cache_write_5m == Decimal("3.75")


def test_each_kind_pays_its_own_rate_and_the_kinds_add_up() -> None:
    tokens = TokenCounts(
        input=1_000_000, output=400_000, cache_read=300_000, cache_write=200_000,
        cache_write_1h=50_000, reasoning=100_000,
    )  # fmt: skip
    cost = kind_costs(
        tokens,
        **RATES,
        cache_write_1h_per_mtok=Decimal(6),
        reasoning_per_mtok=Decimal(20),
        discount=Decimal("0.5"),
    )
    # 500k uncached at 3, 300k reads at 0.3, 150k 5m writes at 3.75, 50k 1h
    # writes at 6, 300k output at 15 and 100k thinking at 20, halved.
    assert cost.input == Decimal("0.75")
    assert cost.cache_read == Decimal("0.045")
    assert cost.cache_write_5m == Decimal("0.28125")
    assert cost.cache_write_1h == Decimal("0.15")
    assert cost.output == Decimal("2.25")
    assert cost.reasoning == Decimal("1")
    assert cost.total == sum((getattr(cost, k) for k in KINDS), Decimal(0))


def test_missing_1h_and_reasoning_rates_fall_back_to_write_and_output() -> None:
    tokens = TokenCounts(input=10, output=10, cache_write=10, cache_write_1h=4, reasoning=6)
    fallback = kind_costs(
        tokens, **RATES, cache_write_1h_per_mtok=None, reasoning_per_mtok=None, discount=Decimal(0)
    )
    plain = kind_costs(
        TokenCounts(input=10, output=10, cache_write=10),
        **RATES,
        cache_write_1h_per_mtok=None,
        reasoning_per_mtok=None,
        discount=Decimal(0),
    )
    assert fallback.total == plain.total
    assert fallback.reasoning == Decimal(6) * 15 / 10**6


def test_exact_context_refuses_to_round() -> None:
    with pytest.raises(Inexact), exact():
        Decimal(1) / Decimal(3)


def test_invoice_rounding_is_half_even() -> None:
    assert to_cents(Decimal("0.125")) == Decimal("0.12")
    assert to_cents(Decimal("0.135")) == Decimal("0.14")


def test_scale_guard_rejects_too_many_places() -> None:
    assert check_scale(Decimal("0.000001"), 6, "p") == Decimal("0.000001")
    with pytest.raises(ValueError, match="decimal places"):
        check_scale(Decimal("0.0000001"), 6, "p")
    with pytest.raises(ValueError, match="finite"):
        check_scale(Decimal("NaN"), 6, "p")
