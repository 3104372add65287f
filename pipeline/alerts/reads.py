"""What the rules read: the closed windows a minute's rules cover, summed
by SQL into the aggregates each rule takes (``findings``), and the cache and
energy baselines slid from minute to minute (:class:`Baselines`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Connection, text

from models.catalog import Catalog
from pipeline.alerts import rules as r
from pipeline.alerts.sliding_sums import SlidingSums
from pipeline.spend.latency import Histogram

MINUTE: Final = timedelta(minutes=1)


def _rows(conn: Connection, sql: str, **params: Any) -> Sequence[Any]:
    return conn.execute(text(sql), params).all()


def _span(end: datetime, minutes: int) -> dict[str, datetime]:
    return {"s": end - minutes * MINUTE, "e": end}


def findings(
    conn: Connection, catalog: Catalog, end: datetime, baselines: Baselines
) -> list[r.Finding]:
    """Every rule on the windows closed by ``end``; ``baselines``
    carries the cache and energy spans from the previous minute's call."""
    rules = catalog.rules
    spike = rules.tenant_spend_spike
    spend: dict[str, Decimal] = {
        t: Decimal(0)
        for (t,) in _rows(
            conn,
            "SELECT DISTINCT tenant FROM spend_window WHERE window_start >= :s"
            " AND window_start < :e",
            s=end - timedelta(days=1),
            e=end,
        )
    }
    for tenant, usd in _rows(
        conn,
        "SELECT tenant, sum(cost_usd) FROM spend_window WHERE window_start >= :s"
        " AND window_start < :e GROUP BY tenant",
        **_span(end, spike.window_minutes),
    ):
        spend[tenant] = usd
    spiking = [f.key[0] for f in r.tenant_spend_spike(spend, rules)]
    why = {t: _top_routes(conn, t, end, spike.window_minutes) for t in spiking}

    cpc = rules.feature_cost_per_call
    calls = (
        "SELECT feature, sum(cost_usd), sum(attempts) FROM spend_window"
        " WHERE window_start >= :s AND window_start < :e GROUP BY feature"
    )
    now = {
        f: r.CostPerCall(c, int(n))
        for f, c, n in _rows(conn, calls, **_span(end, cpc.window_minutes))
    }
    # The baseline: the hour (baseline_minutes) centred on the same time a week earlier.
    week = end - timedelta(days=7) + timedelta(minutes=cpc.baseline_minutes // 2)
    before = {
        f: r.CostPerCall(c, int(n))
        for f, c, n in _rows(conn, calls, **_span(week, cpc.baseline_minutes))
    }

    retry = rules.retry_amplification
    retries = {
        route: r.RetryStats(int(q), int(a), c, rc)
        for route, q, a, c, rc in _rows(
            conn,
            "SELECT route, sum(requests), sum(attempts), sum(cost_usd), sum(retry_cost_usd)"
            " FROM spend_window WHERE window_start >= :s AND window_start < :e GROUP BY route",
            **_span(end, retry.window_minutes),
        )
    }
    unpriced = {
        (m, p): int(n)
        for m, p, n in _rows(
            conn,
            "SELECT model, provider, sum(unpriced_attempts) FROM spend_window"
            " WHERE window_start >= :s AND window_start < :e GROUP BY model, provider",
            **_span(end, rules.unpriced_model.window_minutes),
        )
    }
    reprompt = rules.structured_reprompt
    reprompts = {
        route: r.RateStats(int(q), int(n), c)
        for route, q, n, c in _rows(
            conn,
            "SELECT route, sum(requests), sum(invalid_attempts), sum(invalid_cost_usd)"
            " FROM spend_window WHERE window_start >= :s AND window_start < :e GROUP BY route",
            **_span(end, reprompt.window_minutes),
        )
    }
    fallbacks = {
        route: r.RateStats(int(q), int(n))
        for route, q, n in _rows(
            conn,
            "SELECT route, sum(requests), sum(fallback_attempts) FROM spend_window"
            " WHERE window_start >= :s AND window_start < :e GROUP BY route",
            **_span(end, rules.fallback_rate.window_minutes),
        )
    }
    drift = {
        model: r.TokenCounts(int(n), int(billed), int(diff))
        for model, n, billed, diff in _rows(
            conn,
            "SELECT model, sum(drift_attempts), sum(drift_billed_tokens), sum(drift_abs_tokens)"
            " FROM spend_window WHERE window_start >= :s AND window_start < :e GROUP BY model",
            **_span(end, rules.tokenizer_drift.window_minutes),
        )
    }
    histograms: dict[str, Histogram] = {}
    for route, bucket, calls in _rows(
        conn,
        "SELECT route, bucket, sum(calls) FROM latency_window"
        " WHERE window_start >= :s AND window_start < :e GROUP BY route, bucket",
        **_span(end, rules.tail_latency.window_minutes),
    ):
        histograms.setdefault(route, Histogram()).counts[bucket] += int(calls)
    # Requests whose retries overlap the window. Their cost is the running
    # total as stored: in a backfill it may already include later retries.
    requests = {
        request_id: r.RequestCost(tenant, route, int(retries) + 1, usd)
        for tenant, request_id, route, retries, usd in _rows(
            conn,
            "SELECT tenant, request_id, route, retries, retry_cost_usd FROM request_cost"
            " WHERE last_ts >= :s AND first_ts < :e",
            **_span(end, rules.runaway_request.window_minutes),
        )
    }
    return [
        *r.runaway_request(requests, rules),
        *r.structured_reprompt(reprompts, rules),
        *r.fallback_rate(fallbacks, rules),
        *r.tokenizer_drift(drift, rules),
        *r.tail_latency(histograms, catalog),
        *_budgets(conn, catalog, end),
        *r.tenant_spend_spike(spend, rules, why),
        *r.feature_cost_per_call(now, before, rules),
        *r.retry_amplification(retries, rules),
        *r.unpriced_model(unpriced, rules),
        *_cache(conn, catalog, end, baselines),
        *_energy(conn, catalog, end, baselines),
    ]


def _budgets(conn: Connection, catalog: Catalog, end: datetime) -> list[r.Finding]:
    span = _span(end, catalog.rules.token_budget_breach.window_minutes)
    over = _rows(
        conn,
        "SELECT route, sum(over_input), sum(over_output) FROM budget_window"
        " WHERE window_start >= :s AND window_start < :e GROUP BY route",
        **span,
    )
    if not over:
        return []
    attempts = dict(
        _rows(
            conn,
            "SELECT route, sum(attempts) FROM spend_window"
            " WHERE window_start >= :s AND window_start < :e AND route = ANY(:routes)"
            " GROUP BY route",
            routes=[route for route, *_ in over],
            **span,
        )
    )
    top: dict[str, list[tuple[str, str]]] = {}
    for route, tenant, model, n, beyond in _rows(
        conn,
        "SELECT route, tenant, model, sum(over_input + over_output) AS n, sum(over_tokens)"
        " FROM budget_window WHERE window_start >= :s AND window_start < :e"
        " GROUP BY route, tenant, model ORDER BY n DESC, route, tenant, model",
        **span,
    ):
        if len(top.setdefault(route, [])) < 3:
            top[route].append((f"{tenant} {model}", f"{n} attempts, {beyond:,} tokens over"))
    use = {
        route: r.BudgetUse(int(attempts.get(route, 0)), int(i), int(o), tuple(top[route]))
        for route, i, o in over
    }
    return r.token_budget_breach(use, catalog)


def _top_routes(conn: Connection, tenant: str, end: datetime, minutes: int) -> r.Contributors:
    rows = _rows(
        conn,
        "SELECT route, feature, model, sum(cost_usd) AS usd FROM spend_window"
        " WHERE tenant = :t AND window_start >= :s AND window_start < :e"
        " GROUP BY route, feature, model ORDER BY usd DESC LIMIT 3",
        t=tenant,
        **_span(end, minutes),
    )
    return tuple(
        (f"{route} {feature} {model}", f"${usd:.2f}") for route, feature, model, usd in rows
    )


_HIT_RATES: Final = (
    "SELECT tenant, sum(hits), sum(hits + misses) FROM cache_window"
    " WHERE layer = 'prefix' AND window_start >= :s AND window_start < :e GROUP BY tenant"
)
_ENERGY: Final = (
    "SELECT model, batch_bucket, cache_state, sum(energy_mj), sum(input_tokens + output_tokens)"
    " FROM energy_window WHERE source = 'measured' AND window_start >= :s AND window_start < :e"
    " GROUP BY model, batch_bucket, cache_state"
)


@dataclass
class Baselines:
    """The spans of the cache and energy rules (the closing window and the
    day-long trailing baseline of each), slid from minute to minute through
    one evaluation (:mod:`pipeline.alerts.sliding_sums`)."""

    hit_rates_now: SlidingSums[str]
    hit_rates_before: SlidingSums[str]
    energy_now: SlidingSums[tuple[str, str, str]]
    energy_before: SlidingSums[tuple[str, str, str]]

    @classmethod
    def reading(cls, conn: Connection) -> Baselines:
        def hit_rates(s: datetime, e: datetime) -> list[tuple[str, tuple[int, ...]]]:
            return [(t, (int(h), int(n))) for t, h, n in _rows(conn, _HIT_RATES, s=s, e=e)]

        def energy(s: datetime, e: datetime) -> list[tuple[tuple[str, str, str], tuple[int, ...]]]:
            return [
                ((model, batch, cache), (int(mj), int(tokens)))
                for model, batch, cache, mj, tokens in _rows(conn, _ENERGY, s=s, e=e)
            ]

        return cls(
            SlidingSums(hit_rates),
            SlidingSums(hit_rates),
            SlidingSums(energy),
            SlidingSums(energy),
        )


def _cache(
    conn: Connection, catalog: Catalog, end: datetime, baselines: Baselines
) -> list[r.Finding]:
    cfg = catalog.rules.cache_hit_regression

    def hit_rates(sums: Mapping[str, tuple[int, ...]]) -> dict[str, r.HitCounts]:
        out = {t: r.HitCounts(h, n) for t, (h, n) in sums.items()}
        out["*"] = r.HitCounts(
            sum(v.hits for v in out.values()), sum(v.lookups for v in out.values())
        )
        return out

    now = hit_rates(baselines.hit_rates_now.over(end - cfg.window_minutes * MINUTE, end))
    baseline = hit_rates(
        baselines.hit_rates_before.over(end - cfg.baseline_minutes * MINUTE, end - 5 * MINUTE)
    )
    evictors = tuple(
        (tenant, f"{int(tokens):,} tokens of other tenants' entries")
        for tenant, tokens in _rows(
            conn,
            "SELECT evicting_tenant, sum(evicted_tokens) AS n FROM cache_eviction_window"
            " WHERE evicting_tenant <> evicted_tenant AND window_start >= :s"
            " AND window_start < :e GROUP BY 1 ORDER BY n DESC LIMIT 3",
            **_span(end, 5),
        )
    )
    return r.cache_hit_regression(now, baseline, catalog.rules, evictors)


def _energy(
    conn: Connection, catalog: Catalog, end: datetime, baselines: Baselines
) -> list[r.Finding]:
    cfg = catalog.rules.energy_regression

    def cells(sums: Mapping[tuple[str, str, str], tuple[int, ...]]) -> dict[str, r.CellUse]:
        out: dict[str, r.CellUse] = {}
        for (model, batch, cache), (mj, tokens) in sums.items():
            out.setdefault(model, {})[(batch, cache)] = r.EnergyUse(mj, tokens)
        return out

    span = cfg.window_minutes * MINUTE
    now = cells(baselines.energy_now.over(end - span, end))
    before = cells(baselines.energy_before.over(end - cfg.baseline_minutes * MINUTE, end - span))
    return r.energy_regression(now, before, catalog.rules)
