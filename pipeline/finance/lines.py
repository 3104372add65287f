"""Chargeback documents for a month: pure, no I/O.

A tenant's document has one line per (feature, route, provider, model) for
the calls that succeeded at the first attempt, and the retries and the
failed first attempts of the same key as lines of their own; then its share
of each shared cost; then adjustments for usage of earlier, closed months
that arrived after they closed. Each line carries its exact list cost and
effective cost; its amount is the effective cost rounded once, half-even to
the cent (:data:`ROUNDING_RULE`), and the document total is the sum of the
amounts, so the lines add up to the total exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Final, Literal

from models.money import CENT, exact

ROUNDING_RULE: Final = (
    "Each line's amount is its exact effective cost rounded once, half-even (banker's "
    "rounding) to the cent; the total is the sum of the line amounts. Shared costs are "
    "split to the cent by largest remainder, so the shares add up to the shared cost."
)
LineKind = Literal["usage", "retries", "failed", "shared", "adjustment"]
KIND_ORDER: Final[tuple[LineKind, ...]] = ("usage", "retries", "failed", "shared", "adjustment")
Allocation = Literal["proportional", "even", "fixed"]
ZERO: Final = Decimal(0)


@dataclass(frozen=True)
class KeyUsage:
    """One (tenant, feature, route, provider, model) over a month, as summed
    from the spend windows."""

    tenant: str
    feature: str
    route: str
    provider: str
    model: str
    requests: int = 0
    attempts: int = 0
    retry_attempts: int = 0
    tokens: int = 0
    cost: Decimal = ZERO
    list_cost: Decimal = ZERO
    retry_cost: Decimal = ZERO
    retry_list_cost: Decimal = ZERO
    failed_first_cost: Decimal = ZERO
    failed_first_list_cost: Decimal = ZERO

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.tenant, self.feature, self.route, self.provider, self.model)


@dataclass(frozen=True)
class Line:
    tenant: str
    kind: LineKind
    description: str
    feature: str = ""
    route: str = ""
    provider: str = ""
    model: str = ""
    quantity: int = 0  # tokens for usage, attempts for retries
    list_cost: Decimal = ZERO
    effective_cost: Decimal = ZERO  # exact
    adjusts: date | None = None  # the closed month an adjustment belongs to

    @property
    def discount(self) -> Decimal:
        with exact():
            return self.list_cost - self.effective_cost

    @property
    def amount(self) -> Decimal:
        return self.effective_cost.quantize(CENT, ROUND_HALF_EVEN)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.tenant, self.feature, self.route, self.provider, self.model)


@dataclass(frozen=True)
class SharedCost:
    name: str
    usd: Decimal  # whole cents


@dataclass(frozen=True)
class Policy:
    """How shared costs are split: in proportion to each tenant's effective
    usage cost, evenly among the tenants with usage, or by fixed shares."""

    allocation: Allocation = "proportional"
    fixed_shares: Mapping[str, Decimal] = field(default_factory=dict)


def key_lines(k: KeyUsage) -> list[Line]:
    """The usage line of a key and, when they cost anything, its retries and
    failed first attempts as lines of their own; together they are exactly
    the key's cost."""
    with exact():
        usage_list = k.list_cost - k.retry_list_cost - k.failed_first_list_cost
        usage_cost = k.cost - k.retry_cost - k.failed_first_cost
    parts: list[tuple[LineKind, str, int, Decimal, Decimal]] = [
        ("usage", f"{k.model} tokens, {k.requests:,} requests", k.tokens, usage_list, usage_cost),
        ("retries", f"{k.retry_attempts:,} retry attempts", k.retry_attempts,
         k.retry_list_cost, k.retry_cost),
        ("failed", "failed first attempts", 0, k.failed_first_list_cost, k.failed_first_cost),
    ]  # fmt: skip
    return [
        Line(k.tenant, kind, what, k.feature, k.route, k.provider, k.model, n, listed, cost)
        for kind, what, n, listed, cost in parts
        if kind == "usage" or listed or cost
    ]


def split_to_cents(total: Decimal, weights: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """``total`` (whole cents) split in proportion to ``weights``, to the
    cent, by largest remainder (ties to the name that sorts first): the
    parts always add up to ``total``."""
    if total != total.quantize(CENT):
        raise ValueError(f"a shared cost is whole cents, not {total}")
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive:
        return {}
    whole = sum(positive.values(), ZERO)
    cents = int(total / CENT)
    shares = {k: Decimal(cents) * w / whole for k, w in sorted(positive.items())}
    floors = {k: int(s.to_integral_value(ROUND_DOWN)) for k, s in shares.items()}
    left = cents - sum(floors.values())
    for k in sorted(shares, key=lambda k: (-(shares[k] - floors[k]), k))[: abs(left)]:
        floors[k] += 1 if left > 0 else -1
    return {k: Decimal(c) * CENT for k, c in floors.items()}


def shared_lines(
    costs: Sequence[SharedCost], usage: Mapping[str, Decimal], policy: Policy
) -> list[Line]:
    """Each tenant's share of each shared cost. ``usage``: each tenant's
    effective usage cost this month (the weights of ``proportional``)."""
    if policy.allocation == "proportional":
        weights = dict(usage)
        basis = "in proportion to usage"
    elif policy.allocation == "even":
        weights = {t: Decimal(1) for t, u in usage.items() if u > 0}
        basis = "split evenly"
    else:
        weights = dict(policy.fixed_shares)
        basis = "by fixed share"
    out = []
    for cost in costs:
        for tenant, share in split_to_cents(cost.usd, weights).items():
            out.append(
                Line(
                    tenant,
                    "shared",
                    f"{cost.name} ({basis})",
                    list_cost=share,
                    effective_cost=share,
                )
            )
    return out


def adjustment_lines(
    month: date, now: Iterable[KeyUsage], billed: Mapping[tuple[str, ...], tuple[Decimal, Decimal]]
) -> list[Line]:
    """Usage of the closed ``month`` that is not on any document yet: each
    key's cost now against what its lines (and earlier adjustments) billed,
    as (list cost, effective cost)."""
    out = []
    seen = set()
    for k in now:
        seen.add(k.key)
        list_before, cost_before = billed.get(k.key, (ZERO, ZERO))
        with exact():
            list_delta, cost_delta = k.list_cost - list_before, k.cost - cost_before
        if list_delta or cost_delta:
            out.append(_adjustment(k.key, month, list_delta, cost_delta))
    for key, (list_before, cost_before) in billed.items():
        if key not in seen and (list_before or cost_before):
            out.append(_adjustment(key, month, -list_before, -cost_before))
    return out


def _adjustment(
    key: tuple[str, ...], month: date, list_delta: Decimal, cost_delta: Decimal
) -> Line:
    tenant, feature, route, provider, model = key
    return Line(
        tenant,
        "adjustment",
        f"late usage of {month:%Y-%m}",
        feature,
        route,
        provider,
        model,
        0,
        list_delta,
        cost_delta,
        month,
    )


def ordered(lines: Iterable[Line]) -> list[Line]:
    """Document order: by tenant, kind, then the line's key."""
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    return sorted(
        lines,
        key=lambda x: (x.tenant, rank[x.kind], x.adjusts or date.min, x.feature, x.route,
                       x.provider, x.model, x.description),
    )  # fmt: skip


def total(lines: Iterable[Line]) -> Decimal:
    return sum((x.amount for x in lines), ZERO)
