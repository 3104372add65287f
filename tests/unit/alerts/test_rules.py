"""Anomaly rules on hand-made windows, their edge cases, and the alert lifecycle."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.catalog import Catalog, CatalogError, parse_yaml
from pipeline.alerts import rules as r
from pipeline.alerts.lifecycle import Alert, lifecycle

CATALOG = parse_yaml(resources.files("models").joinpath("data/route_catalog.yaml").read_text())
RULES = CATALOG.rules
D = Decimal


def test_the_bundled_catalog_declares_every_simulated_route() -> None:
    from pipeline.testbed.simulate.usage import ROUTES

    assert {s.route for s in ROUTES} == {route.route for route in CATALOG.routes}


def test_catalog_errors_name_the_path_of_each_bad_value() -> None:
    bad = """
routes:
  - route: /v1/x
    token_budget: {input_cap: -1, output_cap: 5}
    latency_budget: {p50_ms: 900, p95_ms: 500, p99_ms: 1000}
    max_retries: 2
  - route: /v1/x
    token_budget: {input_cap: 1, output_cap: 5}
    latency_budget: {p50_ms: 1, p95_ms: 2, p99_ms: 3}
    max_retries: 99
rules:
  tenant_spend_spike: {k: ten}
  no_such_rule: {}
"""
    with pytest.raises(CatalogError) as exc:
        parse_yaml(bad)
    problems = "\n".join(exc.value.problems)
    assert "routes[0].token_budget.input_cap" in problems
    assert "routes[0].latency_budget" in problems and "p50_ms <= p95_ms" in problems
    assert "routes[1].max_retries" in problems
    assert "rules.tenant_spend_spike.k" in problems and "rules.no_such_rule" in problems
    route = (
        "  - route: /v1/x\n"
        "    token_budget: {input_cap: 1, output_cap: 5}\n"
        "    latency_budget: {p50_ms: 1, p95_ms: 2, p99_ms: 3}\n"
        "    max_retries: 1\n"
    )
    with pytest.raises(CatalogError, match="declared twice"):
        parse_yaml("routes:\n" + route + route)
    with pytest.raises(CatalogError, match="mapping"):
        parse_yaml("- just a list")


# --- spend ---------------------------------------------------------------------


def test_a_tenant_ten_times_the_median_pages_with_its_contributors() -> None:
    spend = {f"t{i}": D(2 + i % 3) for i in range(11)} | {"loop": D("4200")}
    why = {"loop": (("request r-17", "$4,100.00"), ("route /v1/agent", "$4,180.00"))}
    (f,) = r.tenant_spend_spike(spend, RULES, why)
    assert f.key == ("loop",) and f.severity == "page" and f.threshold == 10 * D(3)
    assert "1400.0x the median" in f.summary and f.contributors == why["loop"]
    assert f.dedup_key == "tenant_spend_spike:loop"


def test_spend_spike_edge_cases() -> None:
    assert r.tenant_spend_spike({}, RULES) == []  # no tenants
    assert r.tenant_spend_spike({"solo": D(500)}, RULES) == []  # its own median
    # A median of zero: the floor ($1) decides, not 10 x $0.
    assert r.tenant_spend_spike({"a": D(0), "b": D(0), "c": D("0.50")}, RULES) == []
    (f,) = r.tenant_spend_spike({"a": D(0), "b": D(0), "c": D(5)}, RULES)
    assert f.key == ("c",) and f.threshold == D(1) and "median tenant $0" in f.summary
    # A tenant with zero spend counts toward the median.
    assert r.tenant_spend_spike({"a": D(0), "b": D(0), "c": D(1), "d": D(9)}, RULES)


def test_cost_per_call_doubled_week_over_week() -> None:
    now = {"summary": r.CostPerCall(D("300"), 100), "chat": r.CostPerCall(D("50"), 100)}
    before = {"summary": r.CostPerCall(D("100"), 100), "chat": r.CostPerCall(D("40"), 100)}
    (f,) = r.feature_cost_per_call(now, before, RULES)
    assert f.key == ("summary",) and f.value == 3
    assert r.feature_cost_per_call(now, {}, RULES) == []  # no baseline yet
    few = {"summary": r.CostPerCall(D("300"), 10)}
    assert r.feature_cost_per_call(few, before, RULES) == []  # too few calls to judge
    free = {"summary": r.CostPerCall(D("0"), 100)}
    assert r.feature_cost_per_call(now, free, RULES) == []  # nothing to double


# --- budgets, cache, retries ------------------------------------------------------


def test_token_budget_breaches_on_declared_routes_only() -> None:
    use = {
        "/v1/agent": r.BudgetUse(100, over_input=3, over_output=1, worst=(("req-9", "91,000"),)),
        "/v1/chat": r.BudgetUse(100, 0, 0),
        "/v1/undeclared": r.BudgetUse(100, 5, 0),
    }
    (f,) = r.token_budget_breach(use, CATALOG)
    assert f.key == ("/v1/agent",) and f.value == 4 and "action alert" in f.summary


def test_cache_hit_rate_regression_names_the_evictors() -> None:
    now = {"*": r.HitCounts(180, 1000), "acme": r.HitCounts(650, 1000)}
    before = {"*": r.HitCounts(710, 1000), "acme": r.HitCounts(700, 1000)}
    evictors = (("launchco", "1,710,071 tokens of acme's"),)
    (f,) = r.cache_hit_regression(now, before, RULES, evictors)
    assert f.key == ("*",) and f.value == D("0.18") and f.contributors == evictors
    assert "shared cache: hit rate 18.0% against a trailing 71.0%" in f.summary
    assert r.cache_hit_regression(now, {}, RULES) == []  # no baseline yet
    cold = {"*": r.HitCounts(0, 1000)}
    assert r.cache_hit_regression(now, cold, RULES) == []  # a baseline of 0% cannot regress


def test_retry_amplification_by_attempts_cost_share_or_budget() -> None:
    calm = r.RetryStats(requests=100, attempts=110, cost=D(100), retry_cost=D(5))
    storm = r.RetryStats(100, 400, D(1000), D(800), worst=(("req-loop", "212 attempts"),))
    budget = r.RetryStats(100, 101, D(100), D(1), over_budget=1)
    found = r.retry_amplification({"/a": calm, "/b": storm, "/c": budget}, RULES)
    assert [f.key for f in found] == [("/b",), ("/c",)]
    assert found[0].value == 4 and "80.0% of cost" in found[0].summary
    assert r.retry_amplification({"/z": r.RetryStats(0, 0, D(0), D(0))}, RULES) == []


def test_reprompt_and_fallback_rates() -> None:
    (f,) = r.structured_reprompt(
        {"/v1/extract": r.RateStats(200, 60, D("12.5")), "/v1/chat": r.RateStats(200, 2)}, RULES
    )
    assert f.key == ("/v1/extract",) and f.value == D("0.3") and "$12.50" in f.summary
    assert r.structured_reprompt({"/v1/extract": r.RateStats(5, 5)}, RULES) == []  # too few
    (g,) = r.fallback_rate({"/v1/chat": r.RateStats(100, 30)}, RULES)
    assert g.rule == "fallback_rate" and g.value == D("0.3")


# --- latency -------------------------------------------------------------------


@given(
    st.lists(st.integers(1, 500_000), min_size=1, max_size=300),
    st.sampled_from(["0.5", "0.95", "0.99"]),
)
def test_histogram_percentiles_are_within_five_percent_above_the_truth(
    latencies: list[int], q: str
) -> None:  # fmt: skip
    h = r.Histogram()
    for ms in latencies:
        h.add(ms)
    exact = sorted(latencies)[max(1, math.ceil(D(q) * len(latencies))) - 1]
    got = h.quantile(D(q))
    assert got is not None and exact <= got <= max(exact * 1.05 + 1, 1)


@given(st.lists(st.lists(st.integers(1, 10**6), max_size=50), max_size=5))
def test_merged_windows_equal_one_histogram_of_everything(windows: list[list[int]]) -> None:
    merged, whole = r.Histogram(), r.Histogram()
    for w in windows:
        part = r.Histogram()
        for ms in w:
            part.add(ms)
            whole.add(ms)
        merged.merge(part)
    assert merged.counts == whole.counts


def test_tail_latency_over_the_route_budget() -> None:
    h = r.Histogram()
    h.add(3000, 97)
    h.add(60_000, 3)  # 3% of calls take a minute: p99 breaks /v1/chat's 25 s, p95 does not
    (f,) = r.tail_latency({"/v1/chat": h}, CATALOG)
    assert f.key == ("/v1/chat", "p99") and f.threshold == 25_000 and f.value >= 60_000
    few = r.Histogram()
    few.add(60_000, 5)
    assert r.tail_latency({"/v1/chat": few}, CATALOG) == []  # under min_calls


# --- requests, prices, tokenizers, energy --------------------------------------------


def test_runaway_request_unpriced_model_and_tokenizer_drift() -> None:
    (f,) = r.runaway_request(
        {
            "r-1": r.RequestCost("acme", "/v1/agent", 2100, D("4200")),
            "r-2": r.RequestCost("acme", "/v1/chat", 1, D("0.01")),
        },
        RULES,
    )
    assert (
        f.key == ("acme", "r-1") and "2,100 attempts, its retries have cost $4,200.00" in f.summary
    )
    (u,) = r.unpriced_model({("mystery-9b", "newco"): 12, ("gpt-4o", "openai"): 0}, RULES)
    assert u.key == ("mystery-9b", "newco") and u.severity == "page"
    drift = {
        "claude-4.5-sonnet": r.TokenCounts(calls=500, billed=1_000_000, abs_diff=110_000),
        "gpt-4o": r.TokenCounts(500, 1_000_000, 20_000),
    }
    (t,) = r.tokenizer_drift(drift, RULES)
    assert t.key == ("claude-4.5-sonnet",) and t.value == D("0.11")


def test_energy_per_token_regression_against_its_baseline() -> None:
    small = ("1", "miss")
    before = {
        "qwen3-32b": {small: r.EnergyUse(10_000_000, 100_000)},
        "llama": {small: r.EnergyUse(1, 100_000)},
    }
    now = {
        "qwen3-32b": {small: r.EnergyUse(15_000_000, 100_000)},
        "llama": {small: r.EnergyUse(1, 100_000)},
    }
    (f,) = r.energy_regression(now, before, RULES)
    assert f.key == ("qwen3-32b",) and f.value == D("0.5")
    assert r.energy_regression(now, {}, RULES) == []  # no baseline yet


def test_a_shift_to_smaller_batches_is_not_an_energy_regression() -> None:
    """Same joules per token in every cell, but now most tokens come in small
    (costly) batches: the model's mean J/token triples, the rule stays quiet;
    one cell getting 50% worse fires at its share of the mix."""
    small, big = ("1", "miss"), ("16", "miss")
    before = {"m": {small: r.EnergyUse(9_000_000, 10_000), big: r.EnergyUse(27_000_000, 90_000)}}
    shifted = {"m": {small: r.EnergyUse(81_000_000, 90_000), big: r.EnergyUse(3_000_000, 10_000)}}
    assert r.energy_regression(shifted, before, RULES) == []
    worse = {"m": {small: r.EnergyUse(121_500_000, 90_000), big: r.EnergyUse(3_000_000, 10_000)}}
    (f,) = r.energy_regression(worse, before, RULES)
    # expected 81M + 3M = 84M mJ; actual 124.5M: up 48.2...%
    assert f.value == D(124_500_000) / D(84_000_000) - 1
    # A cell with no baseline counts in neither side.
    new_cell = {"m": {("64", "hit"): r.EnergyUse(10**9, 10**6), **shifted["m"]}}
    assert r.energy_regression(new_cell, before, RULES) == []


# --- lifecycle -----------------------------------------------------------------

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _finding(key: str) -> r.Finding:
    return r.Finding("runaway_request", ("acme", key), "page", D(60), D(50), f"{key} ran away")


def test_fire_update_resolve() -> None:
    first = lifecycle({}, [_finding("r-1")], ["runaway_request"], T, timedelta(minutes=30))
    assert [(t.kind, t.notify) for t in first] == [("fire", True)]
    firing = {"runaway_request:acme/r-1": Alert("runaway_request:acme/r-1", "firing", T, T)}
    again = lifecycle(firing, [_finding("r-1")], ["runaway_request"], T, timedelta(0))
    assert [(t.kind, t.notify) for t in again] == [("update", False)]
    # Another rule's evaluation does not resolve it; its own rule's does.
    assert lifecycle(firing, [], ["unpriced_model"], T, timedelta(0)) == []
    (gone,) = lifecycle(firing, [], ["runaway_request"], T, timedelta(0))
    assert (gone.kind, gone.dedup_key, gone.notify) == ("resolve", "runaway_request:acme/r-1", True)


def test_a_flapping_alert_pages_once_per_cooldown() -> None:
    key = "runaway_request:acme/r-1"
    resolved = {key: Alert(key, "resolved", T, notified_at=T)}
    soon = lifecycle(resolved, [_finding("r-1")], ["runaway_request"], T + timedelta(minutes=5),
                       timedelta(minutes=30))  # fmt: skip
    later = lifecycle(resolved, [_finding("r-1")], ["runaway_request"], T + timedelta(hours=1),
                        timedelta(minutes=30))  # fmt: skip
    assert [(t.kind, t.notify) for t in soon] == [("fire", False)]
    assert [(t.kind, t.notify) for t in later] == [("fire", True)]


def test_every_rule_can_be_switched_off() -> None:
    off = Catalog.model_validate(
        {
            "routes": [route.model_dump() for route in CATALOG.routes],
            "rules": {name: {"enabled": False} for name in type(RULES).model_fields},
        }
    )
    assert r.tenant_spend_spike({"a": D(0), "b": D(0), "c": D(99)}, off.rules) == []
    assert r.unpriced_model({("m", "p"): 3}, off.rules) == []
    assert r.runaway_request({"x": r.RequestCost("a", "/r", 1, D(10**6))}, off.rules) == []


def test_retry_costs_sum_the_retries_of_each_request_exactly() -> None:
    import polars as pl

    from models.prices import PriceBook, PriceEntry
    from pipeline.spend.request_costs import retry_costs

    sonnet = PriceEntry(
        model="claude-4.5-sonnet",
        provider="anthropic",
        effective_from=T - timedelta(days=1),
        input_per_mtok=D(3),
        output_per_mtok=D(15),
        cache_read_per_mtok=D("0.30"),
        cache_write_per_mtok=D("3.75"),
    )
    rows = [  # request, attempt, price_id, seconds
        ("loop", 1, 0, 0),  # the first attempt is not a retry
        ("loop", 2, 0, 5),
        ("loop", 3, 0, 9),
        ("once", 1, 0, 3),  # never retried: no row
        ("free", 2, None, 4),  # unpriced: no cost to run away with
    ]
    events = pl.DataFrame(
        {
            "tenant": ["acme"] * len(rows),
            "request_id": [r[0] for r in rows],
            "route": ["/v1/agent"] * len(rows),
            "ts": [T + timedelta(seconds=r[3]) for r in rows],
            "attempt": [r[1] for r in rows],
            "price_id": [r[2] for r in rows],
            "discounted": [False] * len(rows),
            "input_tokens": [200_000] * len(rows),
            "output_tokens": [1_500] * len(rows),
            "cache_read_tokens": [0] * len(rows),
            "cache_write_tokens": [0] * len(rows),
            "cache_write_1h_tokens": [0] * len(rows),
            "reasoning_tokens": [0] * len(rows),
        }
    )
    (row,) = retry_costs(events, PriceBook((sonnet,))).iter_rows(named=True)
    assert (row["request_id"], row["retries"]) == ("loop", 2)
    assert (row["first_ts"], row["last_ts"]) == (T + timedelta(seconds=5), T + timedelta(seconds=9))
    # Two retries of 200,000 x $3 + 1,500 x $15 per Mtok = 2 x $0.6225.
    assert D(row["retry_cost_usd"]) == D("1.245")
