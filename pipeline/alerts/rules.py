"""Anomaly rules over closed windows. Pure.

Each rule takes the aggregates it needs (built from the spend, energy and
cache windows by the caller) and its settings from the route catalog, and
returns findings: what fired, on which key, the number that made it fire,
the threshold it crossed and the top contributors. A rule without enough
data (no baseline yet, too few calls) stays silent rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from statistics import median

from models.catalog import Catalog, Rules
from models.money import to_cents
from pipeline.spend.latency import Histogram

Contributors = tuple[tuple[str, str], ...]  # (what, how much), largest first


@dataclass(frozen=True)
class Finding:
    rule: str
    key: tuple[str, ...]
    severity: str
    value: Decimal
    threshold: Decimal
    summary: str
    contributors: Contributors = ()

    @property
    def dedup_key(self) -> str:
        """Stable across evaluations: the rule and what it is about."""
        return f"{self.rule}:{'/'.join(self.key)}"


def _ratio(a: Decimal | int, b: Decimal | int) -> Decimal:
    return Decimal(a) / Decimal(b)


def _pct(x: Decimal) -> str:
    return f"{x * 100:.1f}%"


def _usd(x: Decimal) -> str:
    return f"${to_cents(x):,}"


# --- spend ---------------------------------------------------------------------


def tenant_spend_spike(
    spend: Mapping[str, Decimal],
    rules: Rules,
    contributors: Mapping[str, Contributors] | None = None,
) -> list[Finding]:
    """Tenants whose spend in the rolling window exceeds k x the median
    tenant's spend (tenants with zero spend count toward the median), and at
    least the floor, so a median of zero never pages on pocket change."""
    cfg = rules.tenant_spend_spike
    if not cfg.enabled or not spend:
        return []
    mid = Decimal(median(spend.values()))
    threshold = max(cfg.k * mid, cfg.floor_usd)
    return [
        Finding(
            "tenant_spend_spike",
            (tenant,),
            cfg.severity,
            usd,
            threshold,
            f"{tenant} spent {_usd(usd)} in {cfg.window_minutes} min, "
            f"{_ratio(usd, mid):.1f}x the median tenant ({_usd(mid)})"
            if mid
            else f"{tenant} spent {_usd(usd)} in {cfg.window_minutes} min; the median tenant $0",
            (contributors or {}).get(tenant, ()),
        )
        for tenant, usd in sorted(spend.items())
        if usd > threshold
    ]


@dataclass(frozen=True)
class CostPerCall:
    cost: Decimal
    calls: int

    @property
    def per_call(self) -> Decimal | None:
        return _ratio(self.cost, self.calls) if self.calls else None


def feature_cost_per_call(
    current: Mapping[str, CostPerCall], week_ago: Mapping[str, CostPerCall], rules: Rules
) -> list[Finding]:
    """A feature's cost per call at least ``factor`` x the same window a week
    earlier (a prompt change that silently tripled tokens)."""
    cfg = rules.feature_cost_per_call
    out = []
    for feature, now in sorted(current.items()):
        before = week_ago.get(feature)
        if not cfg.enabled or before is None:
            continue  # no baseline yet
        if now.calls < cfg.min_calls or before.calls < cfg.min_calls:
            continue
        now_pc, before_pc = now.per_call, before.per_call
        if now_pc is None or not before_pc:
            continue
        growth = now_pc / before_pc
        if growth >= cfg.factor:
            out.append(
                Finding(
                    "feature_cost_per_call",
                    (feature,),
                    cfg.severity,
                    growth,
                    cfg.factor,
                    f"{feature} costs {_usd(now_pc)} per call, {growth:.2f}x "
                    f"{_usd(before_pc)} a week ago",
                )
            )
    return out


# --- budgets -------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetUse:
    attempts: int
    over_input: int
    over_output: int
    worst: Contributors = ()  # request ids with their token counts


def token_budget_breach(use: Mapping[str, BudgetUse], catalog: Catalog) -> list[Finding]:
    cfg = catalog.rules.token_budget_breach
    out = []
    for route, u in sorted(use.items()):
        declared = catalog.route(route)
        breaches = u.over_input + u.over_output
        if not cfg.enabled or declared is None or breaches < cfg.min_breaches:
            continue
        b = declared.token_budget
        out.append(
            Finding(
                "token_budget_breach",
                (route,),
                cfg.severity,
                Decimal(breaches),
                Decimal(cfg.min_breaches),
                f"{route}: {u.over_input} of {u.attempts} attempts over the input cap "
                f"({b.input_cap:,}), {u.over_output} over the output cap ({b.output_cap:,}); "
                f"action {b.hard_cap_action}",
                u.worst,
            )
        )
    return out


# --- cache ---------------------------------------------------------------------


@dataclass(frozen=True)
class HitCounts:
    hits: int
    lookups: int

    @property
    def rate(self) -> Decimal | None:
        return _ratio(self.hits, self.lookups) if self.lookups else None


def cache_hit_regression(
    current: Mapping[str, HitCounts],
    baseline: Mapping[str, HitCounts],
    rules: Rules,
    contributors: Contributors = (),
) -> list[Finding]:
    """Per tenant (and ``*`` for the shared cache): the hit rate fell below
    (1 - max_drop) x its trailing baseline. ``contributors`` names the top
    evictors, so the page says who thrashed the cache."""
    cfg = rules.cache_hit_regression
    out = []
    for key, now in sorted(current.items()):
        before = baseline.get(key)
        if not cfg.enabled or before is None:
            continue
        if now.lookups < cfg.min_lookups or before.lookups < cfg.min_lookups:
            continue
        now_rate, before_rate = now.rate, before.rate
        if now_rate is None or not before_rate:
            continue
        floor = (1 - cfg.max_drop) * before_rate
        if now_rate < floor:
            out.append(
                Finding(
                    "cache_hit_regression",
                    (key,),
                    cfg.severity,
                    now_rate,
                    floor,
                    f"{'shared cache' if key == '*' else key}: hit rate {_pct(now_rate)} "
                    f"against a trailing {_pct(before_rate)}",
                    contributors,
                )
            )
    return out


# --- retries, re-prompts, fallbacks ---------------------------------------------


@dataclass(frozen=True)
class RetryStats:
    requests: int
    attempts: int
    cost: Decimal
    retry_cost: Decimal
    over_budget: int = 0  # requests whose attempts cost more than the worst case allows
    worst: Contributors = ()


def retry_amplification(stats: Mapping[str, RetryStats], rules: Rules) -> list[Finding]:
    cfg = rules.retry_amplification
    out = []
    for route, s in sorted(stats.items()):
        if not cfg.enabled or s.requests < cfg.min_requests:
            continue
        per_request = _ratio(s.attempts, s.requests)
        share = _ratio(s.retry_cost, s.cost) if s.cost else Decimal(0)
        if (
            per_request <= cfg.max_attempts_per_request
            and share <= cfg.max_retry_cost_share
            and not s.over_budget
        ):
            continue
        out.append(
            Finding(
                "retry_amplification",
                (route,),
                cfg.severity,
                per_request,
                cfg.max_attempts_per_request,
                f"{route}: {per_request:.2f} attempts per request, retries "
                f"{_pct(share)} of cost ({_usd(s.retry_cost)}), {s.over_budget} requests "
                f"over the route's worst-case budget",
                s.worst,
            )
        )
    return out


@dataclass(frozen=True)
class RateStats:
    requests: int
    events: int  # re-prompts, or fallbacks
    cost: Decimal = Decimal(0)  # what those events cost


def _rate_rule(
    name: str,
    stats: Mapping[str, RateStats],
    max_rate: Decimal,
    min_requests: int,
    severity: str,
    enabled: bool,
    what: str,
) -> list[Finding]:
    out = []
    for key, s in sorted(stats.items()):
        if not enabled or s.requests < min_requests:
            continue
        rate = _ratio(s.events, s.requests)
        if rate > max_rate:
            out.append(
                Finding(
                    name,
                    (key,),
                    severity,
                    rate,
                    max_rate,
                    f"{key}: {what} on {_pct(rate)} of {s.requests:,} requests"
                    + (f", costing {_usd(s.cost)}" if s.cost else ""),
                )
            )
    return out


def structured_reprompt(stats: Mapping[str, RateStats], rules: Rules) -> list[Finding]:
    cfg = rules.structured_reprompt
    return _rate_rule(
        "structured_reprompt",
        stats,
        cfg.max_rate,
        cfg.min_requests,
        cfg.severity,
        cfg.enabled,
        "invalid structured output re-prompted",
    )


def fallback_rate(stats: Mapping[str, RateStats], rules: Rules) -> list[Finding]:
    cfg = rules.fallback_rate
    return _rate_rule(
        "fallback_rate",
        stats,
        cfg.max_rate,
        cfg.min_requests,
        cfg.severity,
        cfg.enabled,
        "fell back to another model",
    )


# --- latency -------------------------------------------------------------------


def tail_latency(histograms: Mapping[str, Histogram], catalog: Catalog) -> list[Finding]:
    cfg = catalog.rules.tail_latency
    out = []
    for route, h in sorted(histograms.items()):
        declared = catalog.route(route)
        if not cfg.enabled or declared is None or h.total < cfg.min_calls:
            continue
        budget = declared.latency_budget
        for name, q, limit in (
            ("p99", Decimal("0.99"), budget.p99_ms),
            ("p95", Decimal("0.95"), budget.p95_ms),
        ):
            value = h.quantile(q)
            if value is not None and value > limit:
                out.append(
                    Finding(
                        "tail_latency",
                        (route, name),
                        cfg.severity,
                        Decimal(value),
                        Decimal(limit),
                        f"{route}: {name} {value:,} ms over its {limit:,} ms budget "
                        f"({h.total:,} calls)",
                    )
                )
    return out


# --- single requests, prices, tokenizers, energy -----------------------------------


@dataclass(frozen=True)
class RequestCost:
    tenant: str
    route: str
    attempts: int
    cost: Decimal  # of its retries (attempts after the first)


def runaway_request(requests: Mapping[str, RequestCost], rules: Rules) -> list[Finding]:
    cfg = rules.runaway_request
    return [
        Finding(
            "runaway_request",
            (r.tenant, request_id),
            cfg.severity,
            r.cost,
            cfg.max_usd,
            f"request {request_id} of {r.tenant} on {r.route}: {r.attempts:,} attempts, "
            f"its retries have cost {_usd(r.cost)}",
        )
        for request_id, r in sorted(requests.items())
        if cfg.enabled and r.cost > cfg.max_usd
    ]


def unpriced_model(unpriced: Mapping[tuple[str, str], int], rules: Rules) -> list[Finding]:
    cfg = rules.unpriced_model
    return [
        Finding(
            "unpriced_model",
            (model, provider),
            cfg.severity,
            Decimal(n),
            Decimal(0),
            f"{n:,} attempts on {model} ({provider}) have no price: load one, "
            "and they are repriced",
        )
        for (model, provider), n in sorted(unpriced.items())
        if cfg.enabled and n > 0
    ]


@dataclass(frozen=True)
class TokenCounts:
    calls: int
    billed: int  # provider-billed input tokens of calls that carry a local count
    abs_diff: int  # sum of |local - billed| over those calls


def tokenizer_drift(stats: Mapping[str, TokenCounts], rules: Rules) -> list[Finding]:
    cfg = rules.tokenizer_drift
    out = []
    for model, s in sorted(stats.items()):
        if not cfg.enabled or s.calls < cfg.min_calls or not s.billed:
            continue
        drift = _ratio(s.abs_diff, s.billed)
        if drift > cfg.max_drift:
            out.append(
                Finding(
                    "tokenizer_drift",
                    (model,),
                    cfg.severity,
                    drift,
                    cfg.max_drift,
                    f"{model}: local token counts differ from billed by {_pct(drift)} "
                    f"over {s.calls:,} calls",
                )
            )
    return out


@dataclass(frozen=True)
class EnergyUse:
    energy_mj: int
    tokens: int


# Energy per token moves ~4x with batch size and ~10x with cache hit or miss,
# so a model is compared with itself cell by cell: (batch bucket, cache state).
Cell = tuple[str, str]
CellUse = dict[Cell, EnergyUse]


def energy_regression(
    current: Mapping[str, Mapping[Cell, EnergyUse]],
    baseline: Mapping[str, Mapping[Cell, EnergyUse]],
    rules: Rules,
) -> list[Finding]:
    """Energy now against what the baseline's joules per token give for the
    same tokens in the same cells: a quiet hour's smaller batches are a mix
    shift, not a regression. Cells without a baseline are left out of both."""
    cfg = rules.energy_regression
    out = []
    for model, cells in sorted(current.items()):
        before = baseline.get(model, {})
        matched = [
            (now, before[cell])
            for cell, now in cells.items()
            if cell in before and before[cell].tokens and before[cell].energy_mj
        ]
        tokens = sum(now.tokens for now, _ in matched)
        if not cfg.enabled or tokens < cfg.min_tokens:
            continue
        if sum(b.tokens for _, b in matched) < cfg.min_tokens:
            continue
        actual = sum(now.energy_mj for now, _ in matched)
        expected = sum(
            (_ratio(now.tokens * b.energy_mj, b.tokens) for now, b in matched), Decimal(0)
        )
        increase = _ratio(actual, expected) - 1
        if increase > cfg.max_increase:
            out.append(
                Finding(
                    "energy_regression",
                    (model,),
                    cfg.severity,
                    increase,
                    cfg.max_increase,
                    f"{model}: {_ratio(actual, tokens) / 1000:.3f} J per token, up "
                    f"{_pct(increase)} on the {expected / tokens / 1000:.3f} its trailing "
                    "baseline gives for the same batch sizes and cache states",
                )
            )
    return out
