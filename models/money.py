"""The one place that defines how money is computed and rounded.

Every cost is an exact ``Decimal``. The arithmetic context traps ``Inexact``:
if any step would have to round, it raises instead of silently losing a
fraction of a cent. Rounding happens once, at presentation or invoice time,
with :data:`ROUNDING` (banker's rounding, half-even, to the cent).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, localcontext
from typing import Final

MTOK: Final = Decimal(1_000_000)
ZERO: Final = Decimal(0)
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


@dataclass(frozen=True)
class TokenCounts:
    """A call's billed tokens, as the usage contract counts them: cache reads
    and writes are parts of ``input``, 1-hour writes part of the writes, and
    reasoning part of ``output``."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0


# The token kinds a cost is split into: each token is in exactly one.
KINDS: Final = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")


@dataclass(frozen=True)
class KindCosts:
    """The exact cost of each token kind (:data:`KINDS`)."""

    input: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    reasoning: Decimal
    total: Decimal  # the kinds' sum

    def parts(self) -> tuple[Decimal, ...]:
        """The cost of each kind, in :data:`KINDS` order."""
        return tuple(getattr(self, k) for k in KINDS)


def kind_costs(
    tokens: TokenCounts,
    *,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
    cache_read_per_mtok: Decimal,
    cache_write_per_mtok: Decimal,
    cache_write_1h_per_mtok: Decimal | None,
    reasoning_per_mtok: Decimal | None,
    discount: Decimal,
) -> KindCosts:
    """The cost rule. Each kind pays its own rate per million tokens:

    - uncached input (input - cache reads - cache writes): the input rate;
    - cache reads: the cache read rate;
    - 5-minute cache writes (writes - 1h writes): the cache write rate;
    - 1-hour cache writes: the 1h rate, or the cache write rate if none;
    - output other than reasoning: the output rate;
    - reasoning: the reasoning rate, or the output rate if none;

    every kind times (1 - discount). The rule is linear in the token counts
    for fixed rates, so it may be applied to summed counts and give the sum
    of the costs.
    """
    one_hour = cache_write_per_mtok if cache_write_1h_per_mtok is None else cache_write_1h_per_mtok
    thinking = output_per_mtok if reasoning_per_mtok is None else reasoning_per_mtok
    parts = (
        (tokens.input - tokens.cache_read - tokens.cache_write, input_per_mtok),
        (tokens.cache_read, cache_read_per_mtok),
        (tokens.cache_write - tokens.cache_write_1h, cache_write_per_mtok),
        (tokens.cache_write_1h, one_hour),
        (tokens.output - tokens.reasoning, output_per_mtok),
        (tokens.reasoning, thinking),
    )
    values = []
    total = ZERO
    # The spend path runs this per window group and token subset: no work
    # for a kind with no tokens (most groups have no writes or thinking).
    with exact():
        factor = 1 - discount
        for n, rate in parts:
            value = ZERO
            if n:
                value = n * rate / MTOK
                if discount:
                    value *= factor
                total += value
            values.append(value)
    return KindCosts(values[0], values[1], values[2], values[3], values[4], values[5], total)


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
    "KINDS",
    "MTOK",
    "PRICE_DECIMALS",
    "ROUNDING",
    "Inexact",
    "KindCosts",
    "TokenCounts",
    "check_scale",
    "exact",
    "kind_costs",
    "to_cents",
]
