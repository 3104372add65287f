"""The route catalog in PostgreSQL: loading replaces it whole, in one
transaction (the catalog is configuration: its history lives in version
control), and reading it back gives the same validated Catalog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, insert, select

from models.catalog import Catalog
from models.tables import alert_rule, route_catalog


def load_catalog(engine: Engine, catalog: Catalog) -> None:
    routes = [
        {
            "route": r.route,
            **r.token_budget.model_dump(),
            **r.latency_budget.model_dump(),
            "max_retries": r.max_retries,
            "fallback_model": r.fallback_model,
        }
        for r in catalog.routes
    ]
    rules = [
        {
            "rule": name,
            "enabled": rule.enabled,
            "severity": rule.severity,
            "params": rule.model_dump(mode="json", exclude={"enabled", "severity"}),
        }
        for name, rule in catalog.rules
    ]
    with engine.begin() as conn:
        conn.execute(delete(route_catalog))
        conn.execute(delete(alert_rule))
        if routes:
            conn.execute(insert(route_catalog), routes)
        conn.execute(insert(alert_rule), rules)


def read_catalog(engine: Engine) -> Catalog:
    with engine.connect() as conn:
        routes = conn.execute(select(route_catalog).order_by(route_catalog.c.route)).mappings()
        declared: list[dict[str, Any]] = [
            {
                "route": r["route"],
                "token_budget": {k: r[k] for k in ("input_cap", "output_cap", "hard_cap_action")},
                "latency_budget": {k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms", "ttft_ms")},
                "max_retries": r["max_retries"],
                "fallback_model": r["fallback_model"],
            }
            for r in routes
        ]
        rules = {
            r["rule"]: {"enabled": r["enabled"], "severity": r["severity"], **r["params"]}
            for r in conn.execute(select(alert_rule)).mappings()
        }
    return Catalog.model_validate({"routes": declared, "rules": rules})
