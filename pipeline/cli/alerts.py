"""``finops catalog`` and ``finops alerts``: what the rules are told to
watch, and what they found."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import console, database_url, titled_table
from pipeline.settings import Settings
from pipeline.storage import db

catalog_app = typer.Typer(
    help="The route catalog: token and latency budgets, retries, fallbacks, rule settings.",
    no_args_is_help=True,
)


@catalog_app.command("load")
def catalog_load(
    file: Annotated[Path | None, typer.Argument(help="YAML; default: the bundled catalog")] = None,
) -> None:
    """Validate a route catalog and replace the stored one with it."""
    from models.catalog import CatalogError, parse_yaml
    from pipeline.alerts.catalog_store import load_catalog

    text = (
        file.read_text()
        if file
        else resources.files("models").joinpath("data/route_catalog.yaml").read_text()
    )
    try:
        catalog = parse_yaml(text)
    except CatalogError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    load_catalog(db.engine(database_url()), catalog)
    enabled = sum(1 for _, rule in catalog.rules if rule.enabled)
    console.print(f"catalog: {len(catalog.routes)} routes, {enabled} rules enabled")


@catalog_app.command("show")
def catalog_show() -> None:
    """The stored route catalog and rule settings."""
    from pipeline.alerts.catalog_store import read_catalog

    catalog = read_catalog(db.engine(database_url()))
    table = titled_table(
        "Routes", "route", "input cap", "output cap", "on cap", "p50/p95/p99 ms", "ttft ms",
        "max retries", "fallback",
        numbers={"input cap", "output cap", "p50/p95/p99 ms", "ttft ms", "max retries"},
    )  # fmt: skip
    for r in catalog.routes:
        b, lat = r.token_budget, r.latency_budget
        table.add_row(
            r.route,
            f"{b.input_cap:,}",
            f"{b.output_cap:,}",
            b.hard_cap_action,
            f"{lat.p50_ms:,}/{lat.p95_ms:,}/{lat.p99_ms:,}",
            f"{lat.ttft_ms:,}" if lat.ttft_ms else "-",
            str(r.max_retries),
            r.fallback_model or "-",
        )
    console.print(table)
    rules = titled_table("Rules", "rule", "enabled", "severity", "settings")
    for name, rule in catalog.rules:
        params = rule.model_dump(mode="json", exclude={"enabled", "severity"})
        rules.add_row(
            name,
            "yes" if rule.enabled else "no",
            rule.severity,
            ", ".join(f"{k}={v}" for k, v in params.items()),
        )
    console.print(rules)


alerts_app = typer.Typer(help="Alerts from the anomaly rules.", no_args_is_help=True)


@alerts_app.command("list")
def alerts_list(
    all_: Annotated[bool, typer.Option("--all", help="also resolved alerts")] = False,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's alerts")] = None,
    limit: int = 50,
) -> None:
    """Firing alerts (newest first), with the numbers that made them fire."""
    from pipeline.alerts.alert_store import list_alerts

    rows = list_alerts(db.engine(database_url()), include_resolved=all_, tenant=tenant, limit=limit)
    table = titled_table(
        "Alerts", "id", "status", "severity", "rule", "subject", "window", "resolved", "acked",
        "why", numbers={"id"},
    )  # fmt: skip
    for a in rows:
        why = a.summary + "".join(f"\n  {what}: {much}" for what, much in a.contributors)
        table.add_row(
            str(a.id),
            a.status,
            a.severity,
            a.rule,
            a.subject,
            a.window_start.strftime("%Y-%m-%d %H:%M"),
            a.resolved_at.strftime("%H:%M") if a.resolved_at else "-",
            a.acked_by or "-",
            why,
        )
    console.print(table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int,
    by: Annotated[str, typer.Option(help="who takes it")] = "on-call",
) -> None:
    """Acknowledge an alert (it keeps firing until its condition clears)."""
    from pipeline.alerts.alert_store import acknowledge

    rule = acknowledge(db.engine(database_url()), alert_id, by)
    if rule is None:
        console.print(f"[red]no alert {alert_id}[/]")
        raise typer.Exit(1)
    console.print(f"alert {alert_id} ({rule}) acknowledged by {by}")


@alerts_app.command("test-webhook")
def alerts_test_webhook(
    url: Annotated[
        str | None, typer.Option(help="default: FINOPS_ALERT_WEBHOOK_URL from the environment")
    ] = None,
) -> None:
    """Post a test notification to the alert webhook and show the answer."""
    from pipeline.alerts.webhook import Webhook, slack_payload

    settings = Settings()
    target = url or settings.alert_webhook_url
    if not target:
        console.print("[red]no webhook: set FINOPS_ALERT_WEBHOOK_URL or pass --url[/]")
        raise typer.Exit(2)
    test = {
        "event": "fire",
        "dedup_key": "test:finops",
        "severity": "info",
        "rule": "test",
        "summary": "finops alerts test-webhook: this is a test notification",
        "value": "0",
        "threshold": "0",
        "contributors": [],
    }
    status = asyncio.run(Webhook(target).post(slack_payload(test)))
    if not 200 <= status < 300:
        console.print(f"[red]webhook answered {status or 'nothing'}[/]")
        raise typer.Exit(1)
    console.print(f"webhook answered {status}")
