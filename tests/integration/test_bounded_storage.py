"""Sixty simulated days: retention leaves seen_event only the days an
admitted event can have, a re-send inside that horizon still counts once
(and one beyond it is refused, not counted again), and the month close and
the tenant page read the same amounts from the roll-ups as the minutes
hold, before and after the minutes of the closed month are dropped."""

from __future__ import annotations

import json
from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from models.months import bounds
from pipeline.finance.close import daily_spend, key_usage, sku_usage
from pipeline.finance.lines import KeyUsage, key_lines
from pipeline.storage.partitions import SEEN_EVENT, dedup_horizon, starts_of
from pipeline.storage.retention import children
from pipeline.stream.admission import TOO_OLD
from reports.tenant_view import DIMENSIONS, bucket_minutes, tenant_view
from tests.factories import event
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

DAYS = 60
AGE_DAYS = 35  # the admission bound the retention runs under (the default)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _month_start(t: datetime, back: int) -> date:
    first = t.date().replace(day=1)
    for _ in range(back):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def _minute_usage(engine: Engine, m: date) -> list[tuple[Any, ...]]:
    """What key_usage reads, summed straight from the minutes."""
    s, e = bounds(m)
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT tenant, feature, route, provider, model, sum(requests), sum(attempts),"
                    " sum(retry_attempts), sum(input_tokens + output_tokens), sum(cost_usd),"
                    " sum(list_cost_usd), sum(retry_cost_usd), sum(retry_list_cost_usd),"
                    " sum(failed_first_cost_usd), sum(failed_first_list_cost_usd)"
                    " FROM spend_window WHERE window_start >= :s AND window_start < :e"
                    " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
                ),
                {"s": s, "e": e},
            )
        ]


def _rolled_usage(engine: Engine, m: date) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return sorted(astuple(k) for k in key_usage(conn, m))


def test_sixty_days_keep_the_horizon_and_the_roll_ups_keep_the_money(
    env: Env, engine: Engine, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    env.load_default_prices()
    env.finops(
        "simulate",
        "--start",
        _iso(now - timedelta(days=DAYS)),
        "--duration",
        str(DAYS * 86_400 - 3600),
        "--rate",
        "0.0015",
        "--no-side",
    )
    inside = event(event_id="inside", request_id="inside", ts=_iso(now - timedelta(days=10)))
    beyond = event(event_id="beyond", request_id="beyond", ts=_iso(now - timedelta(days=50)))
    resend = tmp_path / "resend.jsonl"
    resend.write_text(json.dumps(inside) + "\n" + json.dumps(beyond) + "\n")
    env.finops("replay", str(resend))
    env.finops("worker", "--drain")  # admitted under the tests' ten-year bound

    days = {d for (d,) in env.query("SELECT DISTINCT event_day FROM seen_event")}
    assert len(days) >= DAYS - 1
    (attempts_before,) = env.query("SELECT sum(attempts) FROM spend_window")[0]

    # The minutes and the roll-ups agree, for a whole month and a ragged range.
    closed = _month_start(now, 2)  # partly simulated; its minutes get dropped below
    assert _rolled_usage(engine, closed) == _minute_usage(engine, closed)
    assert _rolled_usage(engine, closed), "the month has spend"
    _page_matches_minutes(engine, _month_start(now, 1))

    # Retention under the real bound: only the horizon's days are left.
    bound = {"FINOPS_MAX_EVENT_AGE_DAYS": str(AGE_DAYS)}
    env.finops("db", "retention", extra=bound)
    horizon = dedup_horizon(datetime.now(UTC), timedelta(days=AGE_DAYS), timedelta(minutes=5))
    with engine.connect() as conn:
        left = [starts_of(n, SEEN_EVENT) for n in children(conn, SEEN_EVENT)]
    assert left and all(d is not None and d >= horizon for d in left)
    assert min(d for (d,) in env.query("SELECT min(event_day) FROM seen_event")) >= horizon
    assert len(left) <= AGE_DAYS + 5  # the horizon's days, and today's and tomorrow's

    # A re-send inside the horizon is a duplicate; one beyond it is refused.
    env.finops("replay", str(resend))
    env.finops("worker", "--drain", extra=bound)
    assert env.query("SELECT sum(attempts) FROM spend_window")[0][0] == attempts_before
    (dups,) = env.query("SELECT sum(events_duplicate) FROM sink_offset WHERE sink = 'spend'")[0]
    assert dups == 1
    reasons = [r for (r,) in env.query("SELECT reason FROM dead_letter WHERE line = 1")]
    assert any(r.startswith(TOO_OLD) for r in reasons), reasons

    # Drop the month's minutes: the month close reads the same numbers.
    before = _close_reads(engine, closed)
    env.finops("db", "retention", extra={**bound, "FINOPS_MINUTE_RETENTION_MONTHS": "1"})
    s, e = bounds(closed)
    assert env.query(
        "SELECT count(*) FROM spend_window WHERE window_start >= %s AND window_start < %s", (s, e)
    ) == [(0,)]
    assert _close_reads(engine, closed) == before
    keys, _, _ = before
    # Its chargeback lines bill exactly the month's cost, which the roll-ups still hold.
    lines = [line for k in keys for line in key_lines(KeyUsage(*k))]
    billed = sum((line.effective_cost for line in lines), Decimal(0))
    assert billed == sum((k[9] for k in keys), Decimal(0)) > 0


def _close_reads(engine: Engine, m: date) -> tuple[list[Any], Any, Any]:
    """What closing month ``m`` reads: the keys' sums, the SKUs' and the days'."""
    with engine.connect() as conn:
        return (
            sorted(astuple(k) for k in key_usage(conn, m)),
            sku_usage(conn, m),
            daily_spend(conn, m, before_days=28),
        )


def _page_matches_minutes(engine: Engine, month: date) -> None:
    """The tenant page over a ragged range (it reads days, hours and minutes)
    shows the sums the minutes hold."""
    since = datetime.combine(month, datetime.min.time(), UTC) + timedelta(hours=5, minutes=17)
    until = since + timedelta(days=9, hours=7, minutes=31)
    with engine.connect() as conn:
        (tenant,) = conn.execute(
            text("SELECT tenant FROM spend_window GROUP BY 1 ORDER BY sum(cost_usd) DESC LIMIT 1")
        ).one()
        view = tenant_view(conn, tenant, since, until)
        p = {"t": tenant, "s": since, "e": until}
        where = "WHERE tenant = :t AND window_start >= :s AND window_start < :e"
        cost, attempts, requests = conn.execute(
            text(f"SELECT sum(cost_usd), sum(attempts), sum(requests) FROM spend_window {where}"),
            p,
        ).one()
        assert (view.totals.cost_usd, view.totals.attempts, view.totals.requests) == (
            cost,
            attempts,
            requests,
        )
        bucket = bucket_minutes(until - since)
        points = conn.execute(
            text(
                "SELECT date_bin(make_interval(mins => :b), window_start,"
                " TIMESTAMPTZ '2000-01-01') AS b, sum(cost_usd) FROM spend_window"
                f" {where} GROUP BY b ORDER BY b"
            ),
            p | {"b": bucket},
        ).all()
        assert [(x.bucket, x.cost_usd) for x in view.spend] == [tuple(r) for r in points]
        for dim in DIMENSIONS:
            shares = dict(
                conn.execute(
                    text(f"SELECT {dim}, sum(cost_usd) FROM spend_window {where} GROUP BY 1"), p
                ).all()
            )
            assert {s.key: s.cost_usd for s in view.breakdown[dim]} == shares
