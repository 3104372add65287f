"""Chargeback lines (pipeline/finance/lines.py): exact, and adding up."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pipeline.finance import lines as cb

D = Decimal
cents = st.integers(0, 10**9).map(lambda c: D(c) / 100)
weights = st.dictionaries(
    st.sampled_from(["acme", "globex", "initech", "hooli", "wonka"]),
    st.decimals(min_value=D("0.0001"), max_value=D(10**6), places=4),
    min_size=1,
)


@given(cents, weights)
def test_shared_costs_split_to_the_cent_and_add_up(total: Decimal, w: dict[str, Decimal]) -> None:
    parts = cb.split_to_cents(total, w)
    assert sum(parts.values(), D(0)) == total
    whole = sum(w.values(), D(0))
    for tenant, part in parts.items():
        assert part == part.quantize(D("0.01"))
        assert abs(part - total * w[tenant] / whole) < D("0.01")  # never more than a cent off


def test_the_worked_example_is_exact() -> None:
    """30 days x 10,000 calls of 4,000 input + 500 output tokens at $3/$15
    per Mtok: $5,850.00; with 3,000 of the input tokens read from cache at
    $0.30: $3,420.00."""
    calls = 30 * 10_000
    plain = D(calls) * (D(4000) * 3 + D(500) * 15) / 10**6
    cached = D(calls) * (D(1000) * 3 + D(3000) * D("0.30") + D(500) * 15) / 10**6
    for cost, expected in ((plain, D("5850.00")), (cached, D("3420.00"))):
        k = cb.KeyUsage("acme", "f", "/r", "anthropic", "claude-4.5-sonnet", calls, calls, 0,
                        calls * 4500, cost, cost)  # fmt: skip
        lines = cb.key_lines(k)
        assert len(lines) == 1 and cb.total(lines) == expected and lines[0].discount == 0


money = st.integers(0, 10**12).map(lambda n: D(n) / D(10**10))


@given(money, money, money, money, money, money)
def test_key_lines_add_up_to_the_key_exactly(
    ok: Decimal, retry: Decimal, failed: Decimal, ok_d: Decimal, retry_d: Decimal, failed_d: Decimal
) -> None:
    k = cb.KeyUsage(
        "acme", "f", "/r", "p", "m", 10, 14, 4, 1000,
        cost=ok + retry + failed, list_cost=ok + ok_d + retry + retry_d + failed + failed_d,
        retry_cost=retry, retry_list_cost=retry + retry_d,
        failed_first_cost=failed, failed_first_list_cost=failed + failed_d,
    )  # fmt: skip
    lines = cb.key_lines(k)
    assert sum((x.effective_cost for x in lines), D(0)) == k.cost
    assert sum((x.list_cost for x in lines), D(0)) == k.list_cost
    assert all(x.discount >= 0 for x in lines)
    # The document total is the sum of the rounded lines, by construction.
    assert cb.total(lines) == sum((x.amount for x in lines), D(0))


def test_rounding_is_half_even_once_per_line() -> None:
    line = cb.Line("acme", "usage", "x", effective_cost=D("0.125"))
    assert line.amount == D("0.12")
    assert cb.Line("acme", "usage", "x", effective_cost=D("0.135")).amount == D("0.14")


def test_shared_cost_policies() -> None:
    costs = [cb.SharedCost("Platform fee", D("100.00"))]
    usage = {"acme": D(3), "globex": D(1), "idle": D(0)}
    prop = {x.tenant: x.amount for x in cb.shared_lines(costs, usage, cb.Policy())}
    assert prop == {"acme": D("75.00"), "globex": D("25.00")}
    even = {x.tenant: x.amount for x in cb.shared_lines(costs, usage, cb.Policy("even"))}
    assert even == {"acme": D("50.00"), "globex": D("50.00")}
    fixed = cb.Policy("fixed", {"acme": D("0.3"), "hooli": D("0.7")})
    assert {x.tenant: x.amount for x in cb.shared_lines(costs, usage, fixed)} == {
        "acme": D("30.00"),
        "hooli": D("70.00"),
    }
    # A third each of a cent-exact amount: largest remainder, ties by name.
    thirds = cb.split_to_cents(D("1.00"), {"a": D(1), "b": D(1), "c": D(1)})
    assert thirds == {"a": D("0.34"), "b": D("0.33"), "c": D("0.33")}


def test_late_usage_becomes_an_adjustment_for_its_month() -> None:
    month = date(2025, 11, 1)
    key = ("acme", "f", "/r", "p", "m")
    billed = {key: (D("10.00"), D("8.00")), ("gone", "f", "/r", "p", "m"): (D(1), D(1))}
    now = [cb.KeyUsage(*key, cost=D("8.50"), list_cost=D("10.60"))]
    lines = cb.adjustment_lines(month, now, billed)
    by_tenant = {x.tenant: x for x in lines}
    assert by_tenant["acme"].effective_cost == D("0.50") and by_tenant["acme"].adjusts == month
    assert by_tenant["acme"].list_cost == D("0.60")
    assert by_tenant["gone"].effective_cost == D(-1)  # usage that disappeared is credited
    assert cb.adjustment_lines(month, [cb.KeyUsage(*key, cost=D(8), list_cost=D(10))],
                               {key: (D(10), D(8))}) == []  # fmt: skip


def test_a_month_renders_to_the_same_bytes_every_time() -> None:
    """What makes a re-run after a crash give byte-identical documents: the
    rendering is a pure function of the lines (no clock, no random id)."""
    from datetime import UTC, datetime

    from models.chargeback_policy import ChargebackPolicy
    from reports.chargeback import render_month

    month, closed = date(2026, 9, 1), datetime(2026, 10, 1, 3, 0, tzinfo=UTC)
    k = cb.KeyUsage("acme", "bot", "/chat", "anthropic", "claude-4.5-sonnet", 10, 12, 2, 45_000,
                    D("0.195"), D("0.2"), D("0.039"), D("0.04"), D("0.01"), D("0.01"))  # fmt: skip
    lines = cb.ordered(
        [*cb.key_lines(k), *cb.shared_lines([cb.SharedCost("Fee", D("10.00"))], {"acme": D(1)},
                                            cb.Policy())]
    )  # fmt: skip
    daily = {"acme": [(date(2026, 9, d), D("0.01")) for d in range(1, 31)]}
    once = render_month(month, closed, lines, daily, ChargebackPolicy())
    again = render_month(month, closed, lines, daily, ChargebackPolicy())
    assert once == again
    assert set(once) == {("acme", "html"), ("acme", "pdf"), ("", "html"), ("", "csv")}
    assert once[("acme", "pdf")].startswith(b"%PDF") and b"$10.20" in once[("acme", "html")]


def test_the_default_policy_charges_nothing_unconfigured() -> None:
    """The packaged policy bills no shared cost nobody configured; the
    example beside it does, and parses."""
    from importlib import resources

    from models.chargeback_policy import parse_policy

    data = resources.files("models").joinpath("data")
    default = parse_policy(data.joinpath("chargeback.yaml").read_text())
    assert default.shared_costs == []
    example = parse_policy(data.joinpath("examples/chargeback.yaml").read_text())
    assert {c.name for c in example.shared_costs} >= {"Idle GPU energy"}
