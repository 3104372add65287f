"""The one place that defines how money is computed and rounded.

Every cost is an exact ``Decimal``. The arithmetic context traps ``Inexact``:
if any step would have to round, it raises instead of silently losing a
fraction of a cent. Rounding happens once, at presentation or invoice time,
with :data:`ROUNDING` (banker's rounding, half-even, to the cent).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, localcontext
from typing import Final

MTOK: Final = Decimal(1_000_000)
CENT: Final = Decimal("0.01")
ROUNDING: Final = ROUND_HALF_EVEN

# Prices are USD per million tokens with at most PRICE_DECIMALS places, and a
# batch discount has at most DISCOUNT_DECIMALS places. Together they bound the
# scale of any exact cost to COST_SCALE decimal places, which is the NUMERIC
# scale used in PostgreSQL: a stored cost is never rounded.
PRICE_DECIMALS: Final = 6
DISCOUNT_DECIMALS: Final = 4
COST_SCALE: Final = 6 + PRICE_DECIMALS + DISCOUNT_DECIMALS

EXACT: Final = Context(prec=60, rounding=ROUNDING, traps=[Inexact])


def exact() -> AbstractContextManager[Context]:
    """A context manager for arithmetic that must not round."""
    return localcontext(EXACT)


def token_cost(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
    cache_read_per_mtok: Decimal,
    cache_write_per_mtok: Decimal,
    batch_discount: Decimal,
    batch: bool,
) -> Decimal:
    """The cost rule. ``input_tokens`` counts every prompt token; the cache
    read and write tokens are parts of it, priced at their own rates.

    cost = ((input - cache_read - cache_write) * input_price
            + cache_read * cache_read_price + cache_write * cache_write_price
            + output * output_price) / 10^6, times (1 - batch_discount) if batch.

    The rule is linear in the token counts for a fixed price and batch flag,
    so it may be applied to summed counts and give the sum of the costs.
    """
    with exact():
        uncached = input_tokens - cache_read_tokens - cache_write_tokens
        cost = (
            uncached * input_per_mtok
            + cache_read_tokens * cache_read_per_mtok
            + cache_write_tokens * cache_write_per_mtok
            + output_tokens * output_per_mtok
        ) / MTOK
        if batch:
            cost = cost * (1 - batch_discount)
        return +cost


def to_cents(amount: Decimal) -> Decimal:
    """Round once, half-even, to the cent: the invoice-line rule."""
    return amount.quantize(CENT, rounding=ROUNDING)


def check_scale(value: Decimal, places: int, what: str) -> Decimal:
    """Reject values with more decimal places than the exact-cost bound allows."""
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite number, got {value}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise ValueError(f"{what} has more than {places} decimal places: {value}")
    return value


__all__ = [
    "CENT",
    "COST_SCALE",
    "DISCOUNT_DECIMALS",
    "EXACT",
    "MTOK",
    "PRICE_DECIMALS",
    "ROUNDING",
    "Inexact",
    "check_scale",
    "exact",
    "to_cents",
    "token_cost",
]
