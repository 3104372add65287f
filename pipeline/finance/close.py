"""``finops month close``: freeze a month into chargeback documents.

One transaction reads the month's spend windows, the late usage of earlier
closed months and the shared costs, writes the lines (``invoice_line``), the
rendered documents (``invoice_document``: per tenant HTML and PDF, the
finance summary, the ledger CSV) and the ``month_close`` row. A trigger
refuses any later UPDATE or DELETE of those rows, so a closed month never
changes; closing it again returns what is stored, byte for byte, and a
crash before the commit leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from sqlalchemy import Connection, Engine, TextClause, text

from models import months
from models.chargeback_policy import ChargebackPolicy
from models.money import CENT, exact
from models.months import MonthError
from pipeline.energy.footprint import MJ_PER_KWH
from pipeline.finance import lines as cb
from pipeline.finance.forecast import forecasts
from reports import chargeback as docs
from reports import focus
from reports.spend_grain import spend_rows


@dataclass(frozen=True)
class Closed:
    month: date
    closed_at: datetime
    total: Decimal
    documents: dict[tuple[str, str], bytes]  # (tenant or '', format) -> bytes
    fresh: bool  # closed by this call (False: it was closed already)


def _bounds(m: date) -> dict[str, datetime]:
    """The month's span as query parameters :s and :e."""
    start, end = months.bounds(m)
    return {"s": start, "e": end}


_KEY_SUMS: Final = (
    "SELECT tenant, feature, route, provider, model, sum(requests), sum(attempts),"
    " sum(retry_attempts), sum(input_tokens + output_tokens), sum(cost_usd), sum(list_cost_usd),"
    " sum(retry_cost_usd), sum(retry_list_cost_usd), sum(failed_first_cost_usd),"
    " sum(failed_first_list_cost_usd) FROM {spend} AS s"
    " GROUP BY tenant, feature, route, provider, model"
)


_SKU_SUMS: Final = (
    "SELECT s.tenant, s.provider, s.model, "
    + ", ".join(f"sum({n}), sum(s.{c})" for _, _, n, c, _ in focus.KINDS)
    + " FROM {spend} AS s"
    " GROUP BY s.tenant, s.provider, s.model ORDER BY s.tenant, s.provider, s.model"
)


def _month_spend(sql: str, m: date) -> tuple[TextClause, dict[str, datetime]]:
    """``sql`` over the month's spend: its days' roll-ups, exact to the digit,
    whatever minute windows retention has dropped."""
    spend, params = spend_rows(*months.bounds(m))
    return text(sql.format(spend=spend)), params


def sku_usage(conn: Connection, m: date) -> dict[str, list[docs.SkuUse]]:
    """Per tenant, the month's tokens and cost of each token kind of each model."""
    out: dict[str, list[docs.SkuUse]] = defaultdict(list)
    for tenant, provider, model, *sums in conn.execute(*_month_spend(_SKU_SUMS, m)):
        for i, (kind, meter, _, _, _) in enumerate(focus.KINDS):
            tokens, cost = int(sums[2 * i]), Decimal(sums[2 * i + 1])
            if tokens or cost:
                sku = f"{provider}/{model}/{kind}"
                out[tenant].append(docs.SkuUse(provider, model, sku, meter, tokens, cost))
    return out


def key_usage(conn: Connection, m: date) -> list[cb.KeyUsage]:
    return [cb.KeyUsage(*row) for row in conn.execute(*_month_spend(_KEY_SUMS, m))]


def _billed(conn: Connection, m: date) -> dict[tuple[str, ...], tuple[Decimal, Decimal]]:
    rows = conn.execute(
        text(
            "SELECT tenant, feature, route, provider, model, sum(list_cost), sum(effective_cost)"
            " FROM invoice_line WHERE (month = :m AND kind IN ('usage', 'retries', 'failed'))"
            " OR (kind = 'adjustment' AND adjusts = :m)"
            " GROUP BY tenant, feature, route, provider, model"
        ),
        {"m": m},
    )
    return {tuple(r[:5]): (r[5], r[6]) for r in rows}


def _shared_costs(conn: Connection, m: date, policy: ChargebackPolicy) -> list[cb.SharedCost]:
    idle_mj: int | None = None  # read once, if a cost is priced by it
    out = []
    for spec in policy.shared_costs:
        if spec.usd is not None:
            out.append(cb.SharedCost(spec.name, spec.usd))
            continue
        if idle_mj is None:
            idle_mj = conn.execute(
                text(
                    "SELECT coalesce(sum(idle_mj), 0) FROM node_energy_window"
                    " WHERE window_start >= :s AND window_start < :e"
                ),
                _bounds(m),
            ).scalar_one()
        assert spec.usd_per_kwh is not None
        usd = (Decimal(idle_mj) / MJ_PER_KWH * spec.usd_per_kwh).quantize(CENT, ROUND_HALF_EVEN)
        kwh = (Decimal(idle_mj) / MJ_PER_KWH).quantize(Decimal("0.1"))
        out.append(cb.SharedCost(f"{spec.name}: {kwh:,} kWh at ${spec.usd_per_kwh}/kWh", usd))
    return out


DAILY_BY: Final = ("tenant", "feature", "model")


def daily_spend(
    conn: Connection,
    m: date,
    *,
    by: str = "tenant",
    before_days: int = 0,
    until: datetime | None = None,
) -> dict[str, list[tuple[date, Decimal]]]:
    """Spend per ``by`` (tenant, feature or model) and UTC day of month
    ``m`` and the ``before_days`` before it, read up to ``until`` (default:
    the month's end); every day listed, zero when there was none."""
    if by not in DAILY_BY:
        raise ValueError(f"daily spend is by one of {DAILY_BY}, not {by!r}")
    first = m - timedelta(days=before_days)
    days = (months.next_month(m) - first).days
    end = _bounds(m)["e"]
    spend, params = spend_rows(months.midnight(first), end if until is None else min(until, end))
    found = {
        (key, day): usd
        for key, day, usd in conn.execute(
            # The column name is one of DAILY_BY, checked above.
            text(
                f"SELECT {by}, (window_start AT TIME ZONE 'UTC')::date AS d, sum(cost_usd)"
                f" FROM {spend} AS s GROUP BY {by}, d"
            ),
            params,
        )
    }
    return {
        key: [
            (d, found.get((key, d), Decimal(0)))
            for d in (first + timedelta(days=i) for i in range(days))
        ]
        for key in sorted({k for k, _ in found})
    }


def close_month(
    engine: Engine, m: date, policy: ChargebackPolicy, now: datetime | None = None
) -> Closed:
    """Close month ``m`` (idempotent: a closed month is returned as stored)."""
    closed_at = now or datetime.now(UTC)
    if _bounds(m)["e"] > closed_at:
        raise MonthError(f"{m:%Y-%m} has not ended yet")
    with engine.begin() as conn:
        # One closer at a time; a second waits here, then finds it closed.
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('finops month close'))"))
        stored = stored_month(conn, m)
        if stored is not None:
            return stored
        later = conn.execute(
            text("SELECT max(month) FROM month_close WHERE month > :m"), {"m": m}
        ).scalar()
        if later is not None:
            raise MonthError(f"{later:%Y-%m} is closed already: months close in order")
        usage = key_usage(conn, m)
        lines = [line for k in usage for line in cb.key_lines(k)]
        per_tenant: dict[str, Decimal] = defaultdict(Decimal)
        with exact():
            for k in usage:
                per_tenant[k.tenant] += k.cost
        lines += cb.shared_lines(
            _shared_costs(conn, m, policy),
            per_tenant,
            cb.Policy(policy.allocation, policy.fixed_shares),
        )
        for (earlier,) in conn.execute(
            text("SELECT month FROM month_close WHERE month < :m ORDER BY month"), {"m": m}
        ):
            lines += cb.adjustment_lines(earlier, key_usage(conn, earlier), _billed(conn, earlier))
        lines = cb.ordered(lines)
        _insert_lines(conn, m, lines)
        daily = daily_spend(conn, m, before_days=28)
        documents = docs.render_month(
            m,
            closed_at,
            lines,
            {t: [(d, usd) for d, usd in days if d >= m] for t, days in daily.items()},
            policy,
            # What the forecast said at mid-month, next to the actual total,
            # so finance sees how far to trust the next one.
            forecasts(daily, m, known_days=15),
            sku_usage(conn, m),
        )
        rows = focus.frame([*focus.usage_rows(conn, m), *focus.adjustment_rows(m, lines)])
        documents[("", "focus.csv")] = focus.to_csv(rows)
        documents[("", "focus.parquet")] = focus.to_parquet(rows)
        for (tenant, fmt), content in sorted(documents.items()):
            conn.execute(
                text(
                    "INSERT INTO invoice_document (month, tenant, format, content, sha256)"
                    " VALUES (:m, :t, :f, :c, :h)"
                ),
                {
                    "m": m,
                    "t": tenant,
                    "f": fmt,
                    "c": content,
                    "h": hashlib.sha256(content).hexdigest(),
                },
            )
        conn.execute(
            text(
                "INSERT INTO month_close (month, closed_at, policy, rounding, total)"
                " VALUES (:m, :at, CAST(:p AS jsonb), :r, :t)"
            ),
            {
                "m": m,
                "at": closed_at,
                "p": json.dumps(policy.model_dump(mode="json")),
                "r": cb.ROUNDING_RULE,
                "t": cb.total(lines),
            },
        )
    return Closed(m, closed_at, cb.total(lines), documents, fresh=True)


def _insert_lines(conn: Connection, m: date, lines: list[cb.Line]) -> None:
    if not lines:
        return
    conn.execute(
        text(
            "INSERT INTO invoice_line (month, tenant, line_no, kind, description, feature, route,"
            " provider, model, quantity, list_cost, effective_cost, amount, adjusts) VALUES"
            " (:m, :tenant, :n, :kind, :description, :feature, :route, :provider, :model,"
            " :quantity, :list_cost, :effective_cost, :amount, :adjusts)"
        ),
        [
            {
                "m": m,
                "n": n,
                "tenant": x.tenant,
                "kind": x.kind,
                "description": x.description,
                "feature": x.feature,
                "route": x.route,
                "provider": x.provider,
                "model": x.model,
                "quantity": x.quantity,
                "list_cost": x.list_cost,
                "effective_cost": x.effective_cost,
                "amount": x.amount,
                "adjusts": x.adjusts,
            }
            for n, x in enumerate(lines, 1)
        ],
    )


def stored_month(conn: Connection, m: date) -> Closed | None:
    row = conn.execute(
        text("SELECT closed_at, total FROM month_close WHERE month = :m"), {"m": m}
    ).first()
    if row is None:
        return None
    documents = {
        (tenant, fmt): bytes(content)
        for tenant, fmt, content in conn.execute(
            text("SELECT tenant, format, content FROM invoice_document WHERE month = :m"),
            {"m": m},
        )
    }
    return Closed(m, row[0], row[1], documents, fresh=False)


def stored_lines(conn: Connection, m: date) -> list[cb.Line]:
    rows = conn.execute(
        text(
            "SELECT tenant, kind, description, feature, route, provider, model, quantity,"
            " list_cost, effective_cost, adjusts FROM invoice_line WHERE month = :m"
            " ORDER BY tenant, line_no"
        ),
        {"m": m},
    )
    return [cb.Line(*row) for row in rows]
