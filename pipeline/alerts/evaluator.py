"""Run the anomaly rules on each closed minute, and keep the alerts.

A minute is closed when the event-time watermark is ``lateness`` past its
end. The watermark is the oldest of the partitions' newest event times
(partitions idle for five minutes of wall time do not hold it back), so a
partition that lags in a backfill never has its minutes judged before its
events arrive. The
watermark row in ``alert_watermark`` is locked while a worker evaluates, so
several workers never evaluate the same minute twice; each minute reads only
the windows its rules' spans cover, never the whole table.

All twelve rules run here (:data:`EVALUATED`), on inputs the windows hold;
``token_budget_breach`` reads ``budget_window``, where the spend stage
counted attempts over the caps the catalog declared when it processed them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from psycopg.errors import SerializationFailure
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from models.catalog import Catalog
from pipeline.alerts import rules as r
from pipeline.alerts.catalog_store import read_catalog
from pipeline.alerts.sliding_sums import SlidingSums
from pipeline.spend.latency import Histogram

log = logging.getLogger(__name__)

EVALUATOR: Final = "rules"
MINUTE: Final = timedelta(minutes=1)
EVALUATED: Final = (
    "tenant_spend_spike",
    "feature_cost_per_call",
    "retry_amplification",
    "unpriced_model",
    "cache_hit_regression",
    "energy_regression",
    "structured_reprompt",
    "fallback_rate",
    "tokenizer_drift",
    "tail_latency",
    "runaway_request",
    "token_budget_breach",
)
_ATTEMPTS: Final = 3
# Keys whose first part names a tenant (for the tenant pages and their access rules).
TENANT_KEYED: Final = frozenset({"tenant_spend_spike", "cache_hit_regression", "runaway_request"})


def _rows(conn: Connection, sql: str, **params: Any) -> Sequence[Any]:
    return conn.execute(text(sql), params).all()


def _span(end: datetime, minutes: int) -> dict[str, datetime]:
    return {"s": end - minutes * MINUTE, "e": end}


def findings(
    conn: Connection, catalog: Catalog, end: datetime, baselines: Baselines
) -> list[r.Finding]:
    """The rules of EVALUATED on the windows closed by ``end``; ``baselines``
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
    one evaluation (:mod:`pipeline.sliding_sums`)."""

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

    def hit_rates(sums: Mapping[str, tuple[int, ...]]) -> dict[str, r.HitRate]:
        out = {t: r.HitRate(h, n) for t, (h, n) in sums.items()}
        out["*"] = r.HitRate(
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


@dataclass(frozen=True)
class Published:
    """An alert transition as it goes to the ``alerts`` topic."""

    key: bytes
    value: bytes


def _load_alerts(conn: Connection) -> dict[str, r.Alert]:
    rows = _rows(
        conn,
        "SELECT DISTINCT ON (dedup_key) dedup_key, status, fired_at, notified_at FROM alert"
        " ORDER BY dedup_key, fired_at DESC",
    )
    return {k: r.Alert(k, s, f, n) for k, s, f, n in rows}


def _apply(conn: Connection, transitions: Sequence[r.Transition], end: datetime) -> list[Published]:
    out = []
    for t in transitions:
        if t.kind == "resolve":
            conn.execute(
                text(
                    "UPDATE alert SET status = 'resolved', resolved_at = :e, updated_at = :e"
                    " WHERE dedup_key = :k AND status = 'firing'"
                ),
                {"k": t.dedup_key, "e": end},
            )
            out.append(_message(t, end, None))
            continue
        f = t.finding
        assert f is not None  # fire and update carry their finding
        values = {
            "k": t.dedup_key,
            "rule": f.rule,
            "subject": list(f.key),
            "tenant": f.key[0] if f.rule in TENANT_KEYED and f.key[0] != "*" else None,
            "severity": f.severity,
            "value": f.value,
            "threshold": f.threshold,
            "summary": f.summary,
            "contributors": json.dumps([list(c) for c in f.contributors]),
            "w": end - MINUTE,
            "e": end,
            "notified": end if t.notify else None,
        }
        if t.kind == "fire":
            conn.execute(
                text(
                    "INSERT INTO alert (dedup_key, rule, subject, tenant, severity, status, value,"
                    " threshold, summary, contributors, window_start, fired_at, updated_at,"
                    " notified_at) VALUES (:k, :rule, :subject, :tenant, :severity, 'firing',"
                    " :value, :threshold, :summary, CAST(:contributors AS jsonb), :w, :e, :e,"
                    " :notified)"
                ),
                values,
            )
        else:
            conn.execute(
                text(
                    "UPDATE alert SET value = :value, threshold = :threshold, summary = :summary,"
                    " contributors = CAST(:contributors AS jsonb), updated_at = :e"
                    " WHERE dedup_key = :k AND status = 'firing'"
                ),
                values,
            )
        if t.kind == "fire":
            out.append(_message(t, end, f))
    return out


def _message(t: r.Transition, end: datetime, f: r.Finding | None) -> Published:
    body: dict[str, Any] = {
        "event": t.kind,
        "dedup_key": t.dedup_key,
        "at": end.isoformat(),
        "notify": t.notify,
    }
    if f is not None:
        body |= {
            "rule": f.rule,
            "subject": list(f.key),
            "severity": f.severity,
            "value": str(f.value),
            "threshold": str(f.threshold),
            "summary": f.summary,
            "contributors": [list(c) for c in f.contributors],
        }
    return Published(t.dedup_key.encode(), json.dumps(body).encode())


def evaluate(
    engine: Engine,
    *,
    lateness: timedelta,
    cooldown: timedelta,
    limit: int = 60,
    catalog: Catalog | None = None,
    max_age: timedelta = timedelta(days=1),
    wait: bool = False,
) -> list[Published]:
    """Evaluate up to ``limit`` newly closed minutes; the messages for the
    ``alerts`` topic, in order. A no-op while another worker evaluates,
    unless ``wait``: then it waits for that one to finish, and goes on from
    where it stopped (how a drain makes sure every minute it closed is
    judged before it exits)."""
    for _ in range(_ATTEMPTS - 1):
        try:
            return _evaluate(engine, lateness, cooldown, limit, catalog, max_age, wait)
        except OperationalError as exc:
            if not isinstance(exc.orig, SerializationFailure):
                raise
            # A row this snapshot read changed meanwhile (the evaluation
            # waited for had just moved the watermark, or an alert was
            # acknowledged): nothing was written; again, from a fresh one.
            log.info("alerts: evaluation met a concurrent update; evaluating again")
    return _evaluate(engine, lateness, cooldown, limit, catalog, max_age, wait)


def _evaluate(
    engine: Engine,
    lateness: timedelta,
    cooldown: timedelta,
    limit: int,
    catalog: Catalog | None,
    max_age: timedelta,
    wait: bool,
) -> list[Published]:
    # One snapshot for the whole evaluation: the sliding baselines add and
    # subtract minutes that different statements read, so those must agree.
    with (
        engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
        conn.begin(),
    ):
        conn.execute(
            text(
                "INSERT INTO alert_watermark (evaluator, evaluated_through)"
                " SELECT :n, min(window_start) FROM spend_window HAVING count(*) > 0"
                " ON CONFLICT DO NOTHING"
            ),
            {"n": EVALUATOR},
        )
        row = conn.execute(
            text(
                "SELECT evaluated_through FROM alert_watermark WHERE evaluator = :n"
                f" FOR UPDATE{'' if wait else ' SKIP LOCKED'}"
            ),
            {"n": EVALUATOR},
        ).first()
        watermark = conn.execute(
            text(
                "SELECT min(max_event_ts) FROM sink_offset WHERE sink = 'spend'"
                " AND max_event_ts IS NOT NULL AND updated_at > now() - interval '5 minutes'"
            )
        ).scalar()
        if row is None or watermark is None:
            return []
        through: datetime = row[0]
        frontier = watermark - lateness
        # History older than max_age is not judged: jump over it.
        horizon = (datetime.now(UTC) - max_age).replace(second=0, microsecond=0)
        through = max(through, min(horizon, frontier.replace(second=0, microsecond=0)))
        used = catalog or read_catalog(engine)
        published: list[Published] = []
        alerts = _load_alerts(conn)
        baselines = Baselines.reading(conn)
        end = through + MINUTE
        evaluated = 0
        reach = timedelta(minutes=max(rule.window_minutes for _, rule in used.rules))
        while end <= frontier and evaluated < limit:
            if not any(a.status == "firing" for a in alerts.values()):
                # Nothing firing, and nothing in any rule's span: every rule is
                # silent until the next minute with data, so go straight there
                # (a backfill spanning months is not walked minute by minute).
                quiet_until = _next_data(conn, end, reach, frontier)
                if quiet_until is not None and quiet_until > end:
                    through, end = quiet_until - MINUTE, quiet_until
                    continue
            found = findings(conn, used, end, baselines)
            transitions = r.lifecycle(alerts, found, EVALUATED, end, cooldown)
            published += _apply(conn, transitions, end)
            alerts = _updated(alerts, transitions, end)
            through, end, evaluated = end, end + MINUTE, evaluated + 1
        conn.execute(
            text("UPDATE alert_watermark SET evaluated_through = :t WHERE evaluator = :n"),
            {"t": through, "n": EVALUATOR},
        )
    if published:
        log.info("alerts: %d transitions through %s", len(published), through.isoformat())
    return published


def _next_data(
    conn: Connection, end: datetime, reach: timedelta, frontier: datetime
) -> datetime | None:
    """None when the span ``reach`` before ``end`` has spend or cache windows;
    else the end of the next minute that has some (at most the frontier)."""
    nxt = conn.execute(
        text(
            "SELECT least((SELECT min(window_start) FROM spend_window WHERE window_start >= :s),"
            " (SELECT min(window_start) FROM cache_window WHERE window_start >= :s))"
        ),
        {"s": end - reach},
    ).scalar()
    if nxt is not None and nxt < end:
        return None
    first = frontier if nxt is None else min(nxt + MINUTE, frontier)
    return first.replace(second=0, microsecond=0)


def _updated(
    alerts: Mapping[str, r.Alert], transitions: Sequence[r.Transition], end: datetime
) -> dict[str, r.Alert]:
    out = dict(alerts)
    for t in transitions:
        old = out.get(t.dedup_key)
        if t.kind == "fire":
            notified = end if t.notify else (old.notified_at if old else None)
            out[t.dedup_key] = r.Alert(t.dedup_key, "firing", end, notified)
        elif t.kind == "resolve" and old is not None:
            out[t.dedup_key] = r.Alert(t.dedup_key, "resolved", old.fired_at, old.notified_at)
    return out
