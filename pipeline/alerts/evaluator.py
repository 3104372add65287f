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
from typing import Any, Final

from psycopg.errors import SerializationFailure
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from models.catalog import Catalog
from pipeline.alerts import lifecycle as life
from pipeline.alerts import rules as r
from pipeline.alerts.catalog_store import read_catalog
from pipeline.alerts.reads import MINUTE, Baselines, findings

log = logging.getLogger(__name__)

EVALUATOR: Final = "rules"
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


@dataclass(frozen=True)
class AlertMessage:
    """An alert transition as it goes to the ``alerts`` topic."""

    key: bytes
    value: bytes


def _load_alerts(conn: Connection) -> dict[str, life.Alert]:
    rows = conn.execute(
        text(
            "SELECT DISTINCT ON (dedup_key) dedup_key, status, fired_at, notified_at FROM alert"
            " ORDER BY dedup_key, fired_at DESC"
        )
    ).all()
    return {k: life.Alert(k, s, f, n) for k, s, f, n in rows}


def _apply(
    conn: Connection, transitions: Sequence[life.Transition], end: datetime
) -> list[AlertMessage]:
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


def _message(t: life.Transition, end: datetime, f: r.Finding | None) -> AlertMessage:
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
    return AlertMessage(t.dedup_key.encode(), json.dumps(body).encode())


def evaluate(
    engine: Engine,
    *,
    lateness: timedelta,
    cooldown: timedelta,
    limit: int = 60,
    catalog: Catalog | None = None,
    max_age: timedelta = timedelta(days=1),
    wait: bool = False,
) -> list[AlertMessage]:
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
) -> list[AlertMessage]:
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
        published: list[AlertMessage] = []
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
            transitions = life.lifecycle(alerts, found, EVALUATED, end, cooldown)
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
    alerts: Mapping[str, life.Alert], transitions: Sequence[life.Transition], end: datetime
) -> dict[str, life.Alert]:
    out = dict(alerts)
    for t in transitions:
        old = out.get(t.dedup_key)
        if t.kind == "fire":
            notified = end if t.notify else (old.notified_at if old else None)
            out[t.dedup_key] = life.Alert(t.dedup_key, "firing", end, notified)
        elif t.kind == "resolve" and old is not None:
            out[t.dedup_key] = life.Alert(t.dedup_key, "resolved", old.fired_at, old.notified_at)
    return out
