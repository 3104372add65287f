"""An independent reference for what the pipeline must compute.

Deliberately shares no code with ``models``/``pipeline``: it reads the price
CSV with the csv module, finds the version in force by a plain scan, and
applies the cost rule as written in the issue, in Decimal.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any


def parse_prices(text: str) -> list[dict[str, Any]]:
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        rows.append(
            {
                "model": r["model"],
                "provider": r["provider"],
                "from": datetime.fromisoformat(r["effective_from"].replace("Z", "+00:00")),
                **{
                    k: Decimal(r[k])
                    for k in (
                        "input_per_mtok",
                        "output_per_mtok",
                        "cache_read_per_mtok",
                        "cache_write_per_mtok",
                        "batch_discount",
                    )
                },
            }
        )
    return rows


def price_at(
    prices: list[dict[str, Any]], model: str, provider: str, ts: datetime
) -> dict[str, Any] | None:
    best = None
    for p in prices:
        if (
            p["model"] == model
            and p["provider"] == provider
            and p["from"] <= ts
            and (best is None or p["from"] > best["from"])
        ):
            best = p
    return best


def cost(
    event: dict[str, Any], prices: list[dict[str, Any]], *, at_list: bool = False
) -> Decimal | None:
    """The event's cost; at list price (no batch discount) if ``at_list``."""
    ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    p = price_at(prices, event["model"], event["provider"], ts)
    if p is None:
        return None
    with localcontext() as ctx:
        ctx.prec = 80
        uncached = event["input_tokens"] - event["cache_read_tokens"] - event["cache_write_tokens"]
        c = (
            uncached * p["input_per_mtok"]
            + event["cache_read_tokens"] * p["cache_read_per_mtok"]
            + event["cache_write_tokens"] * p["cache_write_per_mtok"]
            + event["output_tokens"] * p["output_per_mtok"]
        ) / Decimal(10**6)
        if event["batch"] and not at_list:
            c *= 1 - p["batch_discount"]
        return c


def kind_costs(event: dict[str, Any], prices: list[dict[str, Any]]) -> dict[str, Decimal]:
    """The event's cost by token kind (a v1 event: no 1h writes, no
    reasoning), each with the batch discount, as the windows split it."""
    ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    p = price_at(prices, event["model"], event["provider"], ts)
    if p is None:
        return {}
    with localcontext() as ctx:
        ctx.prec = 80
        factor = 1 - p["batch_discount"] if event["batch"] else Decimal(1)
        uncached = event["input_tokens"] - event["cache_read_tokens"] - event["cache_write_tokens"]
        return {
            "input_cost_usd": uncached * p["input_per_mtok"] / 10**6 * factor,
            "cache_read_cost_usd": event["cache_read_tokens"]
            * p["cache_read_per_mtok"]
            / 10**6
            * factor,
            "cache_write_5m_cost_usd": event["cache_write_tokens"]
            * p["cache_write_per_mtok"]
            / 10**6
            * factor,
            "output_cost_usd": event["output_tokens"] * p["output_per_mtok"] / 10**6 * factor,
        }


def window_key(e: dict[str, Any]) -> tuple[Any, ...]:
    """(minute in UTC, tenant, route, feature, provider, model)."""
    ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).astimezone(UTC)
    return (
        ts.replace(second=0, microsecond=0),
        e["tenant"],
        e["route"],
        e["feature"],
        e["provider"],
        e["model"],
    )


def totals_by_tenant(
    events: list[dict[str, Any]], prices: list[dict[str, Any]]
) -> dict[Any, dict[str, Any]]:
    return totals(events, prices, lambda e: e["tenant"])


def totals(
    events: list[dict[str, Any]], prices: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> dict[Any, dict[str, Any]]:
    """Counts, tokens and costs per key; each (tenant, node_id, event_id)
    counted once (the first occurrence in the order given)."""
    seen: set[tuple[str, str, str]] = set()
    out: dict[Any, dict[str, Any]] = defaultdict(lambda: defaultdict(lambda: Decimal(0)))
    for e in events:
        ident = (e["tenant"], e["node_id"], e["event_id"])
        if ident in seen:
            continue
        seen.add(ident)
        t = out[key(e)]
        c = cost(e, prices)
        t["attempts"] += 1
        t["requests"] += e["attempt"] == 1
        t["retry_attempts"] += e["attempt"] > 1
        t["failed_attempts"] += e["status"] != "ok"
        invalid = e["status"] == "invalid_output"
        t["invalid_attempts"] += invalid
        t["fallback_attempts"] += e.get("fallback_from") is not None
        if e.get("local_input_tokens") is not None:
            t["drift_attempts"] += 1
            t["drift_billed_tokens"] += e["input_tokens"]
            t["drift_abs_tokens"] += abs(e["local_input_tokens"] - e["input_tokens"])
        for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            t[k] += e[k]
        if c is None:
            t["unpriced_attempts"] += 1
            continue
        listed = cost(e, prices, at_list=True)
        assert listed is not None
        t["cost_usd"] += c
        t["list_cost_usd"] += listed
        for kind, value in kind_costs(e, prices).items():
            t[kind] += value
        if e["attempt"] > 1:
            t["retry_cost_usd"] += c
            t["retry_list_cost_usd"] += listed
        if e["status"] != "ok":
            t["failed_cost_usd"] += c
            if e["attempt"] == 1:
                t["failed_first_cost_usd"] += c
                t["failed_first_list_cost_usd"] += listed
        if invalid:
            t["invalid_cost_usd"] += c
    return {k: dict(v) for k, v in out.items()}
