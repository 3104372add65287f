"""Every simulated incident fires its rule within two windows of its start and
resolves after it ends; a clean simulated run fires nothing.

The rules are evaluated minute by minute on aggregates that this test builds
from the simulated events itself (a reference, independent of the stream):
spend over a rolling hour, cost per call over five minutes against the same
minutes a week earlier, the shared prefix hit rate against everything
before, the rest over the closing minute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

import pytest

from models.catalog import parse_yaml
from models.prices import PriceBook, parse_csv
from pipeline.alerts import rules as r
from pipeline.testbed.simulate.side import cache_events
from pipeline.testbed.simulate.usage import INCIDENTS, SimConfig, generate

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
CATALOG = parse_yaml(resources.files("models").joinpath("data/route_catalog.yaml").read_text())
BOOK = PriceBook(
    tuple(parse_csv(resources.files("models").joinpath("data/default_prices.csv").read_text()))
)
MINUTE = timedelta(minutes=1)
# Three hours at 4 requests/s; incidents run from 1:30 to 1:45.
CFG = SimConfig(start=START, duration_s=3 * 3600, rate=4.0, seed=11)
EXPECTED = {
    "cache-thrash": "cache_hit_regression",
    "retry-storm": "retry_amplification",
    "structured-output-loop": "structured_reprompt",
    "budget-breach": "token_budget_breach",
    "prompt-change": "feature_cost_per_call",
    "unpriced-model": "unpriced_model",
    "tokenizer-drift": "tokenizer_drift",
    "runaway-agent": "runaway_request",
    "spend-spike": "tenant_spend_spike",
}


def _minute(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["ts"]).replace(second=0, microsecond=0)


def _cost(e: dict[str, Any]) -> Decimal | None:
    price = BOOK.price_at(e["model"], e["provider"], datetime.fromisoformat(e["ts"]))
    if price is None:
        return None
    return price.cost(
        input_tokens=e["input_tokens"],
        output_tokens=e["output_tokens"],
        cache_read_tokens=e["cache_read_tokens"],
        cache_write_tokens=e["cache_write_tokens"],
        batch=e["batch"],
    )


class Minutes:
    """Per-minute aggregates of a run, from which each rule's inputs are read."""

    def __init__(self, events: list[dict[str, Any]], lookups: Iterable[dict[str, Any]]) -> None:
        self.by_minute: dict[datetime, list[tuple[dict[str, Any], Decimal | None]]] = defaultdict(
            list
        )
        # The hour-long spans are summed from per-minute sums: re-adding an
        # hour of events for every minute judged made the day test slow.
        self.tenant_spend: dict[datetime, dict[str, Decimal]] = defaultdict(
            lambda: defaultdict(Decimal)
        )
        self.feature_calls: dict[datetime, dict[str, list[Any]]] = defaultdict(
            lambda: defaultdict(lambda: [Decimal(0), 0])
        )
        for e in events:
            minute, cost = _minute(e), _cost(e)
            self.by_minute[minute].append((e, cost))
            self.tenant_spend[minute][e["tenant"]] += cost or 0
            calls = self.feature_calls[minute][e["feature"]]
            calls[0] += cost or 0
            calls[1] += 1
        self.prefix: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
        for c in lookups:
            if c["layer"] == "prefix" and c["op"] in ("hit", "miss"):
                m = datetime.fromisoformat(c["ts"]).replace(second=0, microsecond=0)
                self.prefix[m][0] += c["op"] == "hit"
                self.prefix[m][1] += 1
        self.request_cost: dict[str, Decimal] = defaultdict(Decimal)

    def span(self, end: datetime, minutes: int) -> Iterator[tuple[dict[str, Any], Decimal | None]]:
        for m in self._closed(end, minutes):
            yield from self.by_minute.get(m, [])

    def _closed(self, end: datetime, minutes: int) -> Iterator[datetime]:
        return (end - (k + 1) * MINUTE for k in range(minutes))

    def spend(self, end: datetime, minutes: int) -> dict[str, Decimal]:
        out: dict[str, Decimal] = defaultdict(Decimal)
        for m in self._closed(end, minutes):
            for tenant, usd in self.tenant_spend.get(m, {}).items():
                out[tenant] += usd
        return dict(out)

    def cost_per_call(self, end: datetime, minutes: int) -> dict[str, r.CostPerCall]:
        sums: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0])
        for m in self._closed(end, minutes):
            for feature, (usd, n) in self.feature_calls.get(m, {}).items():
                sums[feature][0] += usd
                sums[feature][1] += n
        return {f: r.CostPerCall(c, n) for f, (c, n) in sums.items()}


def findings(run: Minutes, week_ago: Minutes, end: datetime) -> list[r.Finding]:
    """The rules evaluated at the close of the minute ending at ``end``, each
    on the span of closed windows its settings name."""
    rules = CATALOG.rules

    def over(minutes: int) -> list[tuple[dict[str, Any], Decimal | None]]:
        return list(run.span(end, minutes))

    spend = run.spend(end, rules.tenant_spend_spike.window_minutes)
    budget: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e, _ in over(rules.token_budget_breach.window_minutes):
        declared = CATALOG.route(e["route"])
        if declared is not None:
            b = budget[e["route"]]
            b[0] += 1
            b[1] += e["input_tokens"] > declared.token_budget.input_cap
            b[2] += e["output_tokens"] > declared.token_budget.output_cap
    retries: dict[str, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0), Decimal(0)])
    for e, cost in over(rules.retry_amplification.window_minutes):
        t = retries[e["route"]]
        t[0] += e["attempt"] == 1
        t[1] += 1
        t[2] += cost or 0
        t[3] += (cost or 0) if e["attempt"] > 1 else 0

    def rates(minutes: int, hit: str) -> dict[str, r.RateStats]:
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for e, _ in over(minutes):
            counts[e["route"]][0] += e["attempt"] == 1
            counts[e["route"]][1] += (
                e["status"] == "invalid_output" if hit == "reprompt" else "fallback_from" in e
            )
        return {k: r.RateStats(*v) for k, v in counts.items()}

    latency: dict[str, r.Histogram] = defaultdict(r.Histogram)
    for e, _ in over(rules.tail_latency.window_minutes):
        latency[e["route"]].add(e["latency_ms"])
    unpriced: dict[tuple[str, str], int] = defaultdict(int)
    for e, cost in over(rules.unpriced_model.window_minutes):
        if cost is None:
            unpriced[(e["model"], e["provider"])] += 1
    drift: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e, _ in over(rules.tokenizer_drift.window_minutes):
        d = drift[e["model"]]
        d[0] += 1
        d[1] += e["input_tokens"]
        d[2] += abs(e["local_input_tokens"] - e["input_tokens"])
    # Cumulative cost of the requests active in the closing window.
    active: set[str] = set()
    for e, cost in over(1):
        if e["attempt"] > 1:  # the stream keeps the running cost of retries
            run.request_cost[e["request_id"]] += cost or 0
            active.add(e["request_id"])
    requests = {rid: r.RequestCost("", "", 0, run.request_cost[rid]) for rid in sorted(active)}
    hits, lookups = run.prefix.get(end - MINUTE, [0, 0])
    before = [v for m, v in run.prefix.items() if m < end - 5 * MINUTE]
    baseline = r.HitCounts(sum(h for h, _ in before), sum(n for _, n in before))
    per_call = rules.feature_cost_per_call.window_minutes
    return [
        *r.tenant_spend_spike(spend, rules),
        *r.feature_cost_per_call(
            run.cost_per_call(end, per_call),
            week_ago.cost_per_call(
                end
                - timedelta(days=7, minutes=-(rules.feature_cost_per_call.baseline_minutes // 2)),
                rules.feature_cost_per_call.baseline_minutes,
            ),
            rules,
        ),
        *r.token_budget_breach({k: r.BudgetUse(*v) for k, v in budget.items()}, CATALOG),
        *r.cache_hit_regression({"*": r.HitCounts(hits, lookups)}, {"*": baseline}, rules),
        *r.retry_amplification({k: r.RetryStats(*v) for k, v in retries.items()}, rules),
        *r.structured_reprompt(rates(rules.structured_reprompt.window_minutes, "reprompt"), rules),
        *r.fallback_rate(rates(rules.fallback_rate.window_minutes, "fallback"), rules),
        *r.tail_latency(latency, CATALOG),
        *r.runaway_request(requests, rules),
        *r.unpriced_model(unpriced, rules),
        *r.tokenizer_drift({k: r.TokenCounts(*v) for k, v in drift.items()}, rules),
    ]


@cache
def week_ago(duration_s: float = CFG.duration_s) -> Minutes:
    cfg = SimConfig(
        start=START - timedelta(days=7),
        duration_s=duration_s,
        rate=CFG.rate,
        seed=CFG.seed + 100,  # another week's traffic, not a copy of this one
    )
    return Minutes(list(generate(cfg)), [])


def timeline(incident: str | None) -> dict[datetime, list[r.Finding]]:
    cfg = SimConfig(
        start=CFG.start, duration_s=CFG.duration_s, rate=CFG.rate, seed=CFG.seed, incident=incident
    )
    events = list(generate(cfg))
    lookups = cache_events(events, cfg) if incident in (None, "cache-thrash") else []
    run = Minutes(events, lookups)
    # The first hour is the baseline; evaluation starts when it is complete.
    ends = [START + timedelta(hours=1) + k * MINUTE for k in range(2 * 60 + 1)]
    return {end: findings(run, week_ago(), end) for end in ends}


def test_a_clean_simulated_day_fires_nothing() -> None:
    """24 hours of clean traffic, every minute after the first hour judged by
    every rule of the reference evaluation: not one finding."""
    day = 24 * 3600.0
    cfg = SimConfig(start=CFG.start, duration_s=day, rate=CFG.rate, seed=CFG.seed + 7)
    events = list(generate(cfg))
    run = Minutes(events, cache_events(events, cfg))
    ends = [START + timedelta(hours=1) + k * MINUTE for k in range(23 * 60 + 1)]
    fired = {end: f for end in ends if (f := findings(run, week_ago(day), end))}
    first = next(iter(fired.items()), None)
    assert not fired, f"{len(fired)} minutes with findings; first: {first}"


def test_a_clean_simulated_run_fires_nothing() -> None:
    fired = {end: f for end, f in timeline(None).items() if f}
    first = next(iter(fired.items()), None)
    assert not fired, f"{len(fired)} minutes with findings; first: {first}"


@pytest.mark.parametrize("incident", sorted(INCIDENTS))
def test_each_incident_fires_its_rule_in_two_windows_and_resolves(incident: str) -> None:
    rule = EXPECTED[incident]
    begin, end = SimConfig(CFG.start, CFG.duration_s, incident=incident).incident_window() or (
        START,
        START,
    )
    found = {t: {f.rule for f in fs} for t, fs in timeline(incident).items()}
    firing = sorted(t for t, rules in found.items() if rule in rules)
    assert firing, f"{rule} never fired for {incident}"
    assert begin < firing[0] <= begin + 2 * MINUTE, (firing[0], begin)
    # Resolved: not firing at the last evaluation, and never before the start.
    last = max(found)
    assert rule not in found[last] and firing[-1] < last and firing[0] > begin
    assert firing[-1] <= end + timedelta(minutes=CATALOG.rules.tenant_spend_spike.window_minutes)
