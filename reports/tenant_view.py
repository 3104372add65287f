"""What the tenant anomaly page and its JSON API show, read from the windows.

Every query runs on the caller's connection, so under a tenant's role the
database's row-level security decides what is visible; the ``tenant``
parameter only narrows an admin's view. Money stays Decimal end to end (JSON
carries it as a string).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any, Final, Literal

from pydantic import BaseModel
from sqlalchemy import Connection, text

from reports.spend_grain import coarsest_for, spend_rows

Dimension = Literal["route", "feature", "model"]
DIMENSIONS: Final[tuple[Dimension, ...]] = ("route", "feature", "model")
# Chart buckets: the smallest of these that keeps a range under ~120 points.
BUCKETS_MIN: Final = (1, 5, 15, 30, 60, 180, 360, 720, 1440)
MAX_POINTS: Final = 120


class Totals(BaseModel):
    cost_usd: Decimal
    requests: int
    attempts: int
    retry_cost_usd: Decimal
    failed_cost_usd: Decimal
    invalid_cost_usd: Decimal
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int


class SpendPoint(BaseModel):
    bucket: datetime
    cost_usd: Decimal
    requests: int
    attempts: int


class SpendShare(BaseModel):
    key: str
    cost_usd: Decimal
    attempts: int
    requests: int
    share: Decimal | None  # of the tenant's cost in the range


class CacheLayer(BaseModel):
    layer: str
    hits: int
    misses: int
    hit_rate: Decimal | None  # request-weighted
    token_hit_rate: Decimal | None
    tokens_from_cache: int


class CachePoint(BaseModel):
    bucket: datetime
    layer: str
    hit_rate: Decimal | None


class Evictions(BaseModel):
    # Another tenant's identity is not this tenant's data: counts only.
    suffered: int
    suffered_tokens: int
    caused: int
    caused_tokens: int


class RetryRow(BaseModel):
    route: str
    requests: int
    attempts: int
    attempts_per_request: Decimal | None
    cost_usd: Decimal
    retry_cost_usd: Decimal
    retry_share: Decimal | None
    failed_cost_usd: Decimal
    invalid_cost_usd: Decimal


class EnergyRow(BaseModel):
    model: str
    source: str  # measured | estimated
    tokens: int
    energy_j: Decimal
    tokens_per_joule: Decimal | None
    wh_per_1k_tokens: Decimal | None


class AlertView(BaseModel):
    id: int
    rule: str
    subject: list[str]
    tenant: str | None
    severity: str
    status: str
    value: Decimal
    threshold: Decimal
    summary: str
    contributors: list[list[Any]]
    window_start: datetime
    fired_at: datetime
    resolved_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None


class TenantView(BaseModel):
    tenant: str
    since: datetime
    until: datetime
    bucket_minutes: int
    totals: Totals
    spend: list[SpendPoint]
    breakdown: dict[str, list[SpendShare]]
    cache: list[CacheLayer]
    cache_series: list[CachePoint]
    evictions: Evictions
    retries: list[RetryRow]
    energy: list[EnergyRow]
    alerts: list[AlertView]


def _ratio(a: Decimal | int, b: Decimal | int, places: str = "0.0001") -> Decimal | None:
    if not b:
        return None
    # A ratio for display, rounded half-even: not money, so rounding is fine.
    with localcontext(Context(prec=40, rounding=ROUND_HALF_EVEN)):
        return (Decimal(a) / Decimal(b)).quantize(Decimal(places))


def bucket_minutes(span: timedelta) -> int:
    minutes = span.total_seconds() / 60
    return next((b for b in BUCKETS_MIN if minutes / b <= MAX_POINTS), BUCKETS_MIN[-1])


def extent(conn: Connection, tenant: str) -> tuple[datetime, datetime] | None:
    """The tenant's first and last window, if it has any (visible here)."""
    first, last = conn.execute(
        text("SELECT min(window_start), max(window_start) FROM spend_window WHERE tenant = :t"),
        {"t": tenant},
    ).one()
    return None if first is None else (first, last)


def tenant_view(conn: Connection, tenant: str, since: datetime, until: datetime) -> TenantView:
    p = {"t": tenant, "s": since, "e": until}
    bucket = bucket_minutes(until - since)
    in_range = "tenant = :t AND window_start >= :s AND window_start < :e"
    # Spend from the roll-ups where whole hours and days allow (the chart's
    # only as coarse as its buckets), the minutes at the edges: the same sums.
    spend_all, all_params = spend_rows(since, until)
    spend_binned, binned_params = spend_rows(since, until, coarsest_for(bucket))
    mine = "tenant = :t"
    # Totals' fields are spend_window columns of the same names.
    sums = ", ".join(f"coalesce(sum({c}), 0)" for c in Totals.model_fields)
    t = conn.execute(
        text(f"SELECT {sums} FROM {spend_all} AS s WHERE {mine}"), p | all_params
    ).one()
    totals = Totals(**dict(zip(Totals.model_fields, t, strict=True)))
    binned = "date_bin(make_interval(mins => :b), window_start, TIMESTAMPTZ '2000-01-01')"
    spend = [
        SpendPoint(bucket=b, cost_usd=c, requests=q, attempts=a)
        for b, c, q, a in conn.execute(
            text(
                f"SELECT {binned} AS b, sum(cost_usd), sum(requests), sum(attempts)"
                f" FROM {spend_binned} AS s WHERE {mine} GROUP BY b ORDER BY b"
            ),
            p | binned_params | {"b": bucket},
        )
    ]
    breakdown = {
        # The column name comes from DIMENSIONS, never from the request.
        dim: [
            SpendShare(key=k, cost_usd=c, attempts=a, requests=q, share=_ratio(c, totals.cost_usd))
            for k, c, a, q in conn.execute(
                text(
                    f"SELECT {dim}, sum(cost_usd) AS c, sum(attempts), sum(requests)"
                    f" FROM {spend_all} AS s WHERE {mine} GROUP BY {dim} ORDER BY c DESC, {dim}"
                ),
                p | all_params,
            )
        ]
        for dim in DIMENSIONS
    }
    cache = [
        CacheLayer(
            layer=layer,
            hits=h,
            misses=m,
            hit_rate=_ratio(h, h + m),
            token_hit_rate=_ratio(ht, ht + mt),
            tokens_from_cache=ht,
        )
        for layer, h, m, ht, mt in conn.execute(
            text(
                "SELECT layer, sum(hits), sum(misses), sum(hit_tokens), sum(miss_tokens)"
                f" FROM cache_window WHERE {in_range} GROUP BY layer ORDER BY layer"
            ),
            p,
        )
    ]
    cache_series = [
        CachePoint(bucket=b, layer=layer, hit_rate=_ratio(h, h + m))
        for b, layer, h, m in conn.execute(
            text(
                f"SELECT {binned} AS b, layer, sum(hits), sum(misses) FROM cache_window"
                f" WHERE {in_range} GROUP BY b, layer ORDER BY b, layer"
            ),
            p | {"b": bucket},
        )
    ]
    ev = conn.execute(
        text(
            "SELECT coalesce(sum(evictions) FILTER (WHERE evicted_tenant = :t), 0),"
            " coalesce(sum(evicted_tokens) FILTER (WHERE evicted_tenant = :t), 0),"
            " coalesce(sum(evictions) FILTER (WHERE evicting_tenant = :t), 0),"
            " coalesce(sum(evicted_tokens) FILTER (WHERE evicting_tenant = :t), 0)"
            " FROM cache_eviction_window WHERE window_start >= :s AND window_start < :e"
            " AND evicting_tenant <> evicted_tenant"
            " AND (evicted_tenant = :t OR evicting_tenant = :t)"
        ),
        p,
    ).one()
    retries = [
        RetryRow(
            route=route,
            requests=q,
            attempts=a,
            attempts_per_request=_ratio(a, q, "0.01"),
            cost_usd=c,
            retry_cost_usd=rc,
            retry_share=_ratio(rc, c),
            failed_cost_usd=fc,
            invalid_cost_usd=ic,
        )
        for route, q, a, c, rc, fc, ic in conn.execute(
            text(
                "SELECT route, sum(requests), sum(attempts), sum(cost_usd), sum(retry_cost_usd),"
                " sum(failed_cost_usd), sum(invalid_cost_usd) AS ic"
                f" FROM {spend_all} AS s WHERE {mine}"
                " GROUP BY route ORDER BY sum(retry_cost_usd) DESC, route"
            ),
            p | all_params,
        )
    ]
    energy = [
        EnergyRow(
            model=model,
            source=source,
            tokens=tokens,
            energy_j=Decimal(mj) / 1000,
            tokens_per_joule=_ratio(tokens * 1000, mj),
            # 1 Wh = 3,600,000 mJ
            wh_per_1k_tokens=_ratio(mj * 1000, tokens * 3_600_000, "0.000001"),
        )
        for model, source, tokens, mj in conn.execute(
            text(
                "SELECT model, source, sum(input_tokens + output_tokens), sum(energy_mj)"
                f" FROM energy_window WHERE {in_range} GROUP BY model, source ORDER BY 1, 2"
            ),
            p,
        )
    ]
    return TenantView(
        tenant=tenant,
        since=since,
        until=until,
        bucket_minutes=bucket,
        totals=totals,
        spend=spend,
        breakdown=breakdown,
        cache=cache,
        cache_series=cache_series,
        evictions=Evictions(
            suffered=ev[0], suffered_tokens=ev[1], caused=ev[2], caused_tokens=ev[3]
        ),
        retries=retries,
        energy=energy,
        alerts=alerts(conn, since, until, tenant=tenant),
    )


def alerts(
    conn: Connection,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    tenant: str | None = None,
    firing_only: bool = False,
    limit: int = 200,
) -> list[AlertView]:
    """Alerts active at some point in [since, until), newest first."""
    rows: Sequence[Any] = conn.execute(
        text(
            "SELECT id, rule, subject, tenant, severity, status, value, threshold, summary,"
            " contributors, window_start, fired_at, resolved_at, acked_at, acked_by FROM alert"
            " WHERE (CAST(:t AS text) IS NULL OR tenant = :t)"
            " AND (CAST(:e AS timestamptz) IS NULL OR fired_at < :e)"
            " AND (CAST(:s AS timestamptz) IS NULL OR resolved_at IS NULL OR resolved_at >= :s)"
            " AND (NOT :firing OR status = 'firing')"
            " ORDER BY fired_at DESC, id DESC LIMIT :limit"
        ),
        {"t": tenant, "s": since, "e": until, "firing": firing_only, "limit": limit},
    ).all()
    keys = AlertView.model_fields
    return [AlertView(**dict(zip(keys, row, strict=True))) for row in rows]


def tenants(conn: Connection) -> list[str]:
    """Tenants visible on ``conn`` (all of them for admin, one for a tenant)."""
    return list(
        # The daily roll-up: every tenant ever, in the fewest rows.
        conn.execute(text("SELECT DISTINCT tenant FROM spend_window_day ORDER BY tenant")).scalars()
    )
