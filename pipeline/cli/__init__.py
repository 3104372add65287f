"""``finops``: the command line of the pipeline."""

from __future__ import annotations

# First, before the seconds of imports below: see its docstring.
import pipeline.worker.stop_signal  # noqa: F401

# isort: split

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.bar import Bar
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from models import prices as price_parsers
from models.carbon import GpuEmbodied, GridIntensity, Site, parse_csv
from models.money import to_cents
from pipeline.cli import finance as cli_finance
from pipeline.cli import web as cli_web
from pipeline.cli.tables import titled_table
from pipeline.embedded import runtime as embedded
from pipeline.embedded.endpoints import Services, resolve
from pipeline.energy.footprint import MJ_PER_KWH
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.testbed.simulate.usage import SimConfig

app = typer.Typer(
    help="LLM FinOps pipeline: usage events in, exact priced windows out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
prices_app = typer.Typer(help="The versioned price book.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(prices_app, name="prices")
carbon_app = typer.Typer(
    help="Carbon reference data: grid intensity, embodied emissions, sites.",
    no_args_is_help=True,
)
app.add_typer(carbon_app, name="carbon")
catalog_app = typer.Typer(
    help="The route catalog: token and latency budgets, retries, fallbacks, rule settings.",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")
alerts_app = typer.Typer(help="Alerts from the anomaly rules.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
dead_app = typer.Typer(help="Review and replay rejected input.", no_args_is_help=True)
app.add_typer(dead_app, name="dead-letters")
app.add_typer(cli_web.tokens_app, name="tokens")
app.command()(cli_web.serve)
app.add_typer(cli_finance.month_app, name="month")
app.add_typer(cli_finance.report_app, name="report")
app.command()(cli_finance.forecast)
# Piped output (logs, CI, tests) gets room for the wide tables instead of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=160)


def _services() -> tuple[Settings, Services]:
    settings = Settings()
    return settings, resolve(settings)


def parse_time(value: str) -> datetime:
    """RFC 3339, or a bare date (midnight UTC). A time without a zone is UTC."""
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _check_incident(incident: str | None) -> None:
    from pipeline.testbed.simulate.usage import INCIDENTS

    if incident is not None and incident not in INCIDENTS:
        raise typer.BadParameter(f"choose from {', '.join(INCIDENTS)}", param_hint="--incident")


# --- embedded services -----------------------------------------------------


@app.command()
def up() -> None:
    """Start the embedded broker and PostgreSQL in the background (reusing running ones)."""
    settings = Settings()
    started = embedded.up(settings.home)
    if started.fresh_broker:
        from pipeline.embedded.endpoints import forget_offsets

        forget_offsets(started.database_url)
    console.print(f"broker    [bold]{started.kafka_url}[/]  (in-memory: for trying and testing)")
    console.print(f"postgres  [bold]{started.database_url}[/]")
    console.print(f"state     {settings.home}")


@app.command()
def down() -> None:
    """Stop the embedded services (the broker's messages are gone; PostgreSQL data stays)."""
    stopped = embedded.down(Settings().home)
    for name, was in stopped.items():
        console.print(f"{name:9} {'stopped' if was else 'was not running'}")


@app.command()
def status() -> None:
    """Show the embedded services and their URLs."""
    info = embedded.status(Settings().home)
    console.print_json(json.dumps(info))


# --- database and prices ---------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations (the only way the schema is created)."""
    _, services = _services()
    db.upgrade(services.database_url, revision)
    console.print(f"schema at revision [bold]{db.current_revision(services.database_url)}[/]")


def _read_prices(path: Path) -> list[price_parsers.PriceEntry]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        return price_parsers.parse_yaml(text)
    return price_parsers.parse_csv(text)


def _load(entries: list[price_parsers.PriceEntry], source: str) -> None:
    from pipeline.spend.price_store import load_entries, reprice

    _, services = _services()
    engine = db.engine(services.database_url)
    result = load_entries(engine, entries, source)
    if result.conflicts:
        for c in result.conflicts:
            console.print(f"[red]conflict[/] {c}")
        console.print("nothing loaded: publish a new version with a later effective_from")
        raise typer.Exit(1)
    console.print(f"loaded {result.inserted} price versions ({result.unchanged} already present)")
    repriced = reprice(engine)
    if repriced.events:
        console.print(f"repriced {repriced.events} unpriced events (+${repriced.cost_usd})")


@prices_app.command("load")
def prices_load(file: Path) -> None:
    """Load a price CSV (or .yaml) and reprice events that had no price."""
    try:
        entries = _read_prices(file)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    _load(entries, f"file:{file.name}")


@prices_app.command("import-litellm")
def prices_import_litellm(
    file: Path,
    effective_from: Annotated[str | None, typer.Option(help="RFC 3339; default now")] = None,
) -> None:
    """Import LiteLLM's model_prices_and_context_window.json."""
    when = parse_time(effective_from) if effective_from else datetime.now(UTC)
    imported = price_parsers.parse_litellm(file.read_text(encoding="utf-8"), when)
    if imported.skipped:
        console.print(f"skipped {len(imported.skipped)} entries without token prices")
    _load(imported.entries, f"litellm:{file.name}")


@prices_app.command("list")
def prices_list(model: Annotated[str | None, typer.Option(help="only this model")] = None) -> None:
    """Show every price version."""
    from pipeline.spend.price_store import load_book

    _, services = _services()
    book = load_book(db.engine(services.database_url))
    table = Table(
        "model",
        "provider",
        "effective from",
        "input",
        "output",
        "cache read",
        "cache write",
        "batch disc.",
        title="USD per million tokens",
    )
    for e in sorted(book.entries, key=lambda e: (e.model, e.provider, e.effective_from)):
        if model and e.model != model:
            continue
        table.add_row(
            e.model,
            e.provider,
            e.effective_from.isoformat(),
            str(e.input_per_mtok),
            str(e.output_per_mtok),
            str(e.cache_read_per_mtok),
            str(e.cache_write_per_mtok),
            str(e.batch_discount),
        )
    console.print(table)


@prices_app.command("reprice")
def prices_reprice() -> None:
    """Price stored unpriced events whose model now has a price, fixing their windows."""
    from pipeline.spend.price_store import reprice

    _, services = _services()
    result = reprice(db.engine(services.database_url))
    console.print(
        f"repriced {result.events} events (+${result.cost_usd}); "
        f"{result.still_unpriced} still have no price"
    )


def default_prices() -> list[price_parsers.PriceEntry]:
    text = resources.files("models").joinpath("data/default_prices.csv").read_text()
    return price_parsers.parse_csv(text)


# --- publishing --------------------------------------------------------------


def _publish(
    services: Services,
    settings: Settings,
    lines: object,
    total: int | None,
    per_message: int,
    label: str,
    topic: str | None = None,
) -> None:
    topic = topic or settings.usage_topic
    from pipeline.stream.kafka import ensure_topics
    from pipeline.stream.producer import BatchingPublisher

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)
        publisher = BatchingPublisher(
            services.kafka_url,
            topic,
            events_per_message=per_message,
            max_message_bytes=settings.max_message_bytes,
            on_progress=lambda n: progress.update(task, completed=n),
            compression=settings.kafka_compression,
        )

        async def run() -> object:
            await ensure_topics(
                services.kafka_url,
                [settings.usage_topic, settings.usage_dlq_topic, *settings.side_topics],
                settings.partitions,
            )
            return await publisher.publish(lines)  # type: ignore[arg-type]

        published = asyncio.run(run())
    console.print(
        f"published {published.events} events in {published.messages} messages "  # type: ignore[attr-defined]
        f"to '{topic}'"
    )


@app.command()
def replay(
    file: Path,
    per_message: Annotated[
        int | None,
        typer.Option(help="events per message (default: batched, FINOPS_EVENTS_PER_MESSAGE)"),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="default: the usage topic; or gpu-telemetry, cache-events")
    ] = None,
) -> None:
    """Publish a JSONL file to a topic (usage by default), bad lines included as they are."""
    settings, services = _services()
    total = sum(1 for line in file.open("rb") if line.strip())

    def lines() -> object:
        with file.open("rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line

    _publish(
        services,
        settings,
        lines(),
        total,
        per_message or settings.events_per_message,
        "replay",
        topic,
    )


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="requests per second of event time")] = 20.0,
    duration: Annotated[float, typer.Option(help="seconds of event time")] = 3600.0,
    seed: int = 7,
    start: Annotated[str | None, typer.Option(help="RFC 3339; default: duration ago")] = None,
    per_message: Annotated[int | None, typer.Option(help="events per message")] = None,
    incident: Annotated[
        str | None, typer.Option(help="inject one incident (see --list-incidents)")
    ] = None,
    side: Annotated[
        bool, typer.Option(help="also GPU telemetry and cache events on their topics")
    ] = True,
    cache_counters: Annotated[
        bool,
        typer.Option(
            "--cache-counters/--cache-per-op",
            help="cache nodes send per-minute counters (count=n), or one event per operation",
        ),
    ] = True,
    continues: Annotated[
        bool,
        typer.Option(
            help="the span ending at --start was published already: leave out its last"
            " telemetry instant, which that span sampled"
        ),
    ] = False,
    list_incidents: Annotated[bool, typer.Option(help="list the incidents and exit")] = False,
) -> None:
    """Publish realistic, seeded traffic: usage, and GPU telemetry and cache events."""
    from pipeline.testbed.simulate.usage import INCIDENTS, SimConfig

    if list_incidents:
        for name, what in INCIDENTS.items():
            console.print(f"[bold]{name}[/]: {what}")
        return
    _check_incident(incident)
    settings, services = _services()
    begin = parse_time(start) if start else datetime.now(UTC) - timedelta(seconds=duration)
    cfg = SimConfig(start=begin, duration_s=duration, rate=rate, seed=seed, incident=incident)
    per_message = per_message or settings.events_per_message
    publish_simulation(services, settings, cfg, per_message, side, cache_counters, continues)


def publish_simulation(
    services: Services,
    settings: Settings,
    cfg: SimConfig,
    per_message: int,
    side: bool,
    cache_counters: bool = True,
    continues: bool = False,
) -> None:
    """Publish ``cfg``'s usage, and with ``side`` its telemetry and cache
    events (per-minute counters, or with ``cache_counters`` off one per
    operation); ``continues``: the span right before it was published, so its
    first telemetry instant was sampled already."""
    from pipeline.testbed.simulate import side as simulate_side
    from pipeline.testbed.simulate.usage import generate

    events = list(generate(cfg))
    _publish(
        services, settings, simulate_side.lines(iter(events)), len(events), per_message, "usage"
    )
    if not side:
        return
    cache = simulate_side.cache_events(events, cfg)
    for label, topic, items in (
        (
            "telemetry",
            settings.telemetry_topic,
            simulate_side.telemetry(events, cfg, baseline=not continues),
        ),
        ("cache", settings.cache_topic, simulate_side.counters(cache) if cache_counters else cache),
    ):
        rows = list(items)
        _publish(
            services,
            settings,
            simulate_side.lines(iter(rows)),
            len(rows),
            per_message,
            label,
            topic,
        )


# --- processing ----------------------------------------------------------------


@app.command()
def worker(
    drain: Annotated[bool, typer.Option(help="exit 0 once every partition is caught up")] = False,
    stats_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    log_level: str = "warning",
) -> None:
    """Run a faust worker in the consumer group."""
    from pipeline.worker.process import run_worker

    settings, services = _services()
    code = run_worker(
        settings,
        services.kafka_url,
        services.database_url,
        drain=drain,
        stats_file=stats_file,
        loglevel=log_level,
    )
    raise typer.Exit(code)


def drain_with_progress(settings: Settings, services: Services) -> None:
    """Run ``finops worker --drain`` as a child and show its progress."""
    import os

    import psycopg

    from pipeline.stream.kafka import end_offsets

    targets = asyncio.run(end_offsets(services.kafka_url, settings.usage_topic))
    total = sum(targets.values())
    env = {
        **os.environ,
        "FINOPS_KAFKA_URL": services.kafka_url,
        "FINOPS_DATABASE_URL": services.database_url,
    }
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--drain"], env=env)
    with (
        Progress(
            TextColumn("drain"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("messages"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
        psycopg.connect(services.database_url, autocommit=True) as conn,
    ):
        task = progress.add_task("drain", total=total)
        while proc.poll() is None:
            rows = conn.execute(
                "SELECT partition, next_offset FROM sink_offset"
                " WHERE sink = 'spend' AND topic = %s",
                (settings.usage_topic,),
            ).fetchall()
            done = {p: o for p, o in rows}
            progress.update(task, completed=sum(min(done.get(p, 0), e) for p, e in targets.items()))
            time.sleep(0.3)
        progress.update(task, completed=total)
    if proc.returncode:
        console.print(f"[red]worker exited with {proc.returncode}[/]")
        raise typer.Exit(proc.returncode)


# --- reports -----------------------------------------------------------------


def print_spend(
    services: Services, start: datetime | None, end: datetime | None, by: tuple[str, ...]
) -> None:
    from reports.spend import spend, time_range

    engine = db.engine(services.database_url)
    if start is None or end is None:
        span = time_range(engine)
        if span is None:
            console.print("no spend recorded yet")
            return
        start = start or span[0]
        end = end or span[1] + timedelta(minutes=1)
    rows = spend(engine, start, end, by)
    table = Table(
        title=f"Spend {start.isoformat()} .. {end.isoformat()} (USD, rounded half-even "
        "to the cent for display; stored exactly)"
    )
    for d in by:
        table.add_column(d, no_wrap=True)
    for h in (
        "requests",
        "attempts",
        "input tok",
        "output tok",
        "cached tok",
        "retry $",
        "failed $",
        "unpriced",
        "cost $",
    ):
        table.add_column(h, justify="right")
    table.add_column("share of the top row")
    top = max((Decimal(r.values["cost_usd"]) for r in rows), default=Decimal(0))
    total = Decimal(0)
    for r in rows:
        v = r.values
        total += Decimal(v["cost_usd"])
        share = float(Decimal(v["cost_usd"]) / top) if top else 0.0  # display only

        table.add_row(
            *r.key,
            f"{v['requests']:,}",
            f"{v['attempts']:,}",
            f"{v['input_tokens']:,}",
            f"{v['output_tokens']:,}",
            f"{v['cache_read_tokens']:,}",
            f"{to_cents(Decimal(v['retry_cost_usd'])):,}",
            f"{to_cents(Decimal(v['failed_cost_usd'])):,}",
            f"{v['unpriced_attempts']:,}",
            f"{to_cents(Decimal(v['cost_usd'])):,}",
            Bar(1.0, 0.0, share, width=24, color="cyan"),
        )
    console.print(table)
    console.print(f"total cost: [bold]${to_cents(total):,}[/] (exact: ${total})")


@app.command("spend")
def spend_cmd(
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or date")] = None,
    to: Annotated[str | None, typer.Option(help="RFC 3339 or date (exclusive)")] = None,
    by: Annotated[
        str, typer.Option(help="comma list of tenant,route,feature,provider,model")
    ] = "tenant",
) -> None:
    """Spend from the windows in PostgreSQL."""
    _, services = _services()
    dims = tuple(d.strip() for d in by.split(",") if d.strip())
    try:
        print_spend(
            services, parse_time(from_) if from_ else None, parse_time(to) if to else None, dims
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@carbon_app.command("load")
def carbon_load(
    intensity: Annotated[
        Path | None, typer.Option(help="CSV: " + "region,effective_from,gco2e_per_kwh,source")
    ] = None,
    embodied: Annotated[
        Path | None,
        typer.Option(help="CSV: gpu_type,embodied_kgco2e,lifetime_hours,tdp_w,source"),
    ] = None,
    sites: Annotated[Path | None, typer.Option(help="CSV: kind,pattern,region,gpu_type")] = None,
) -> None:
    """Load carbon tables from CSV files; with no file, the bundled defaults.
    A loaded version is never rewritten: add a later effective_from instead."""
    from pipeline.energy.carbon_store import defaults

    rows: list[GridIntensity | GpuEmbodied | Site] = []
    try:
        if intensity:
            rows += parse_csv(GridIntensity, intensity.read_text())
        if embodied:
            rows += parse_csv(GpuEmbodied, embodied.read_text())
        if sites:
            rows += parse_csv(Site, sites.read_text())
    except (ValueError, OSError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    _, services = _services()
    load_carbon(services, rows if intensity or embodied or sites else defaults())


def load_carbon(services: Services, rows: Sequence[GridIntensity | GpuEmbodied | Site]) -> None:
    from pipeline.energy.carbon_store import load_rows

    result = load_rows(db.engine(services.database_url), rows)
    if result.conflicts:
        for c in result.conflicts:
            console.print(f"[red]conflict[/] {c}")
        console.print("nothing loaded")
        raise typer.Exit(1)
    console.print(f"carbon data: {result.inserted} new rows, {result.unchanged} already loaded")


@carbon_app.command("list")
def carbon_list() -> None:
    """The carbon book in force."""
    from pipeline.energy.carbon_store import load_book

    _, services = _services()
    book = load_book(db.engine(services.database_url))
    table = titled_table(
        "Grid intensity", "region", "from", "gCO2e/kWh", "source", numbers={"gCO2e/kWh"}
    )
    for g in sorted(book.intensities, key=lambda g: (g.region, g.effective_from)):
        table.add_row(g.region, g.effective_from.isoformat(), str(g.gco2e_per_kwh), g.source)
    console.print(table)
    numbers = ("kgCO2e", "lifetime h", "TDP W", "g per GPU-hour")
    gpus = titled_table("Embodied emissions per GPU", "GPU type", *numbers, numbers=numbers)
    for e in book.embodied:
        gpus.add_row(
            e.gpu_type,
            str(e.embodied_kgco2e),
            str(e.lifetime_hours),
            str(e.tdp_w),
            f"{e.grams_per_gpu_hour:.3f}",
        )
    console.print(gpus)
    sites = titled_table("Sites", "kind", "pattern", "region", "GPU type")
    for site in book.sites:
        sites.add_row(site.kind, site.pattern, site.region, site.gpu_type)
    console.print(sites)


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
    _, services = _services()
    load_catalog(db.engine(services.database_url), catalog)
    enabled = sum(1 for _, rule in catalog.rules if rule.enabled)
    console.print(f"catalog: {len(catalog.routes)} routes, {enabled} rules enabled")


@catalog_app.command("show")
def catalog_show() -> None:
    """The stored route catalog and rule settings."""
    from pipeline.alerts.catalog_store import read_catalog

    _, services = _services()
    catalog = read_catalog(db.engine(services.database_url))
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


@alerts_app.command("list")
def alerts_list(
    all_: Annotated[bool, typer.Option("--all", help="also resolved alerts")] = False,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's alerts")] = None,
    limit: int = 50,
) -> None:
    """Firing alerts (newest first), with the numbers that made them fire."""
    from sqlalchemy import text

    _, services = _services()
    sql = (
        "SELECT id, status, severity, rule, array_to_string(subject, '/'), window_start,"
        " resolved_at, acked_by, summary, contributors FROM alert"
        " WHERE (:all OR status = 'firing') AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)"
        " ORDER BY fired_at DESC, id DESC LIMIT :limit"
    )
    with db.engine(services.database_url).connect() as conn:
        rows = conn.execute(text(sql), {"all": all_, "tenant": tenant, "limit": limit}).all()
    table = titled_table(
        "Alerts", "id", "status", "severity", "rule", "subject", "window", "resolved", "acked",
        "why", numbers={"id"},
    )  # fmt: skip
    for id_, status, sev, rule, subject, window, resolved, acked, summary, contrib in rows:
        why = summary + "".join(f"\n  {what}: {much}" for what, much in contrib)
        table.add_row(
            str(id_),
            status,
            sev,
            rule,
            subject,
            window.strftime("%Y-%m-%d %H:%M"),
            resolved.strftime("%H:%M") if resolved else "-",
            acked or "-",
            why,
        )
    console.print(table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int,
    by: Annotated[str, typer.Option(help="who takes it")] = "on-call",
) -> None:
    """Acknowledge an alert (it keeps firing until its condition clears)."""
    from sqlalchemy import text

    _, services = _services()
    with db.engine(services.database_url).begin() as conn:
        found = conn.execute(
            text("UPDATE alert SET acked_at = now(), acked_by = :by WHERE id = :id RETURNING rule"),
            {"by": by, "id": alert_id},
        ).first()
    if found is None:
        console.print(f"[red]no alert {alert_id}[/]")
        raise typer.Exit(1)
    console.print(f"alert {alert_id} ({found[0]}) acknowledged by {by}")


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


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="requests per second of event time")] = 20.0,
    incident: Annotated[
        str | None,
        typer.Option(help="inject one incident (see finops simulate --list-incidents)"),
    ] = None,
) -> None:
    """The whole system in one command: services, schema, prices, an hour of traffic, drain."""
    from pipeline.spend.price_store import load_entries
    from pipeline.testbed.demo_hours import DemoRun, HourTaken, must_publish
    from pipeline.testbed.demo_store import claim_hour, demo_at, mark_published
    from pipeline.testbed.simulate.usage import SimConfig

    _check_incident(incident)

    settings, services = _services()
    console.rule("finops demo")
    console.print(f"broker   {services.kafka_url}\npostgres {services.database_url}")
    db.upgrade(services.database_url)
    engine = db.engine(services.database_url)
    result = load_entries(engine, default_prices(), "default")
    console.print(f"price book: {result.inserted} new, {result.unchanged} already loaded")
    from pipeline.energy.carbon_store import defaults

    load_carbon(services, defaults())
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)
    span = f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    want = DemoRun(Decimal(str(rate)), incident)
    try:
        publish = must_publish(demo_at(engine, start), want)
    except HourTaken as exc:
        console.print(f"[red]{span}: {exc}[/]")
        raise typer.Exit(1) from exc
    if publish and not claim_hour(engine, start, want):
        console.print(f"[red]{span}: another demo claimed this hour a moment ago[/]")
        raise typer.Exit(1)
    if publish:
        console.print(f"simulating {span}" + (f" with the {incident} incident" if incident else ""))
        # One seed per hour: the same hour always gets the same traffic.
        cfg = SimConfig(
            start=start, duration_s=3600, rate=rate, seed=int(start.timestamp()) // 3600,
            incident=incident,
        )  # fmt: skip
        before = demo_at(engine, start - timedelta(hours=1))
        publish_simulation(
            services, settings, cfg, settings.events_per_message, side=True,
            continues=before is not None and before.complete,
        )  # fmt: skip
        mark_published(engine, start)
    else:
        console.print(f"{span} already holds this demo; showing it without publishing it again")
    drain_with_progress(settings, services)
    print_spend(services, start, end, ("tenant",))
    print_energy(services, start, end, ("model",))
    print_cache(services, start, end, 10)
    console.print(
        "\nData: PostgreSQL tables spend_window, energy_window, cache_window, dead_letter at "
        f"{services.database_url}"
        "\nTry:  finops spend --by tenant,feature   ·   finops energy --by batch_bucket,cache_state"
        "\n      finops cache   ·   finops status   ·   finops down"
    )


@app.command()
def bench(
    events: Annotated[int, typer.Option(help="events per message shape")] = 200_000,
    shapes: Annotated[
        str, typer.Option(help="any of batched,joined,per-op,single")
    ] = "batched,joined,per-op,single",
    rounds: Annotated[
        int, typer.Option(min=1, help="measure the shapes this many times, interleaved")
    ] = 1,
) -> None:
    """Pipeline throughput against a raw aiokafka consumer, same events, same run."""
    from pipeline.testbed.bench import SHAPES, run_bench

    settings, services = _services()
    shape_names = tuple(s.strip() for s in shapes.split(","))
    unknown = sorted(set(shape_names) - set(SHAPES))
    if unknown:
        raise typer.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}", param_hint="--shapes"
        )
    run_bench(settings, services, events, shape_names, console, rounds)


_ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def _range(from_: str | None, to: str | None) -> tuple[datetime, datetime]:
    return (
        parse_time(from_) if from_ else _ALL_TIME[0],
        parse_time(to) if to else _ALL_TIME[1],
    )


telemetry_app = typer.Typer(help="GPU telemetry.", no_args_is_help=True)
app.add_typer(telemetry_app, name="telemetry")


@telemetry_app.command("ingest")
def telemetry_ingest(
    source: Annotated[str, typer.Argument(help="a dcgm-exporter scrape: file path or http(s) URL")],
    interval: Annotated[float, typer.Option(help="seconds between scrapes")] = 15.0,
    count: Annotated[int, typer.Option(help="scrapes to take (0: until interrupted)")] = 1,
) -> None:
    """Read NVIDIA dcgm-exporter metrics and publish them as telemetry samples."""
    from urllib.request import urlopen

    from pipeline.energy.dcgm import parse_scrape

    settings, services = _services()
    taken = 0
    while count == 0 or taken < count:
        if taken:
            time.sleep(interval)
        if source.startswith(("http://", "https://")):
            with urlopen(source, timeout=10) as response:
                text = response.read().decode()
        else:
            text = Path(source).read_text()
        samples = parse_scrape(text, datetime.now(UTC))
        lines = [s.model_dump_json(exclude_none=True).encode() for s in samples]
        _publish(
            services,
            settings,
            iter(lines),
            len(lines),
            settings.events_per_message,
            "telemetry",
            settings.telemetry_topic,
        )
        taken += 1


@app.command("energy")
def energy_cmd(
    by: Annotated[
        str, typer.Option(help="comma list of model,batch_bucket,cache_state,tenant,route,feature")
    ] = "model",
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or date")] = None,
    to: Annotated[str | None, typer.Option(help="RFC 3339 or date (exclusive)")] = None,
    method: Annotated[bool, typer.Option(help="print how carbon and SCI are computed")] = False,
) -> None:
    """Tokens per joule, Wh per 1k tokens, gCO2e and SCI per 1k tokens;
    measured and estimated apart."""
    from pipeline.energy.footprint import METHOD

    _, services = _services()
    start, end = _range(from_, to)
    dims = tuple(d.strip() for d in by.split(",") if d.strip())
    try:
        print_energy(services, start, end, dims)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if method:
        console.print(f"\n[bold]Carbon method[/]\n{METHOD}")


def _kwh(mj: int) -> str:
    return f"{Decimal(mj) / MJ_PER_KWH:.4f}"


def _grams(g: Decimal) -> str:
    return f"{g.quantize(Decimal('0.001')):,}"


def print_energy(services: Services, start: datetime, end: datetime, dims: tuple[str, ...]) -> None:
    from reports.carbon import carbon
    from reports.energy import energy, node_totals

    engine = db.engine(services.database_url)
    rows = energy(engine, start, end, dims)
    nodes = node_totals(engine, start, end)
    grams = carbon(engine, start, end, dims)
    numbers = ("attempts", "tokens", "energy kWh", "tokens/J", "Wh/1k tok", "gCO2e", "SCI g/1k tok")
    table = titled_table("Energy and carbon per token", *dims, "source", *numbers, numbers=numbers)
    for r in rows:
        tpj, wh = r.tokens_per_joule, r.wh_per_1k_tokens
        f = grams.groups.get((*r.key, r.source))
        sci = f.sci_per_1k_tokens if f else None
        table.add_row(
            *r.key,
            r.source,
            f"{r.attempts:,}",
            f"{r.tokens:,}",
            _kwh(r.energy_mj),
            f"{tpj:.3f}" if tpj is not None else "-",
            f"{wh:.4f}" if wh is not None else "-",
            _grams(f.carbon_g) if f else "-",
            f"{sci:.4f}" if sci is not None else "-",
        )
    console.print(table)
    console.print(
        f"measured {_kwh(nodes.measured_mj)} kWh = attributed "
        f"{_kwh(nodes.attributed_mj)} + idle {_kwh(nodes.idle_mj)};"
        f" {nodes.open_windows} node-windows not yet split;"
        f" {nodes.unmeasured_ms / 1000:.0f} s without telemetry"
    )
    fleet, idle = grams.fleet, grams.idle
    sci = fleet.sci_per_1k_tokens
    console.print(
        f"carbon {_grams(fleet.carbon_g)} gCO2e (operational {_grams(fleet.operational_g)},"
        f" embodied {_grams(fleet.embodied_g)}; idle share {_grams(idle.carbon_g)});"
        f" fleet SCI {f'{sci:.4f}' if sci is not None else '-'} g per 1k tokens"
        + (f"; [yellow]{_kwh(fleet.unlocated_mj)} kWh unlocated[/]" if fleet.unlocated_mj else "")
    )


@app.command("cache")
def cache_cmd(
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or date")] = None,
    to: Annotated[str | None, typer.Option(help="RFC 3339 or date (exclusive)")] = None,
    minutes: Annotated[int, typer.Option(help="time bucket")] = 10,
    providers: Annotated[
        bool, typer.Option(help="also the providers' prefix hit rate per tenant, route, model")
    ] = False,
) -> None:
    """Shared-cache hit rate over time, the top evictors, and (--providers) the
    providers' own prefix-cache hit rate from usage."""
    _, services = _services()
    start, end = _range(from_, to)
    print_cache(services, start, end, minutes, providers)


def print_cache(
    services: Services, start: datetime, end: datetime, minutes: int, providers: bool = False
) -> None:
    from reports.cache import evictors, hit_rates, provider_prefix_rates, savings

    engine = db.engine(services.database_url)
    counts = ("hits", "misses", "hit rate")
    table = titled_table(
        "Shared cache hit rate (requests)", "from", "layer", *counts, "", numbers=counts
    )
    for r in hit_rates(engine, start, end, minutes, shared=True):
        rate = r.rate or 0
        table.add_row(
            r.bucket.strftime("%Y-%m-%d %H:%M"),
            r.layer,
            f"{r.hits:,}",
            f"{r.misses:,}",
            f"{float(rate):.0%}",
            Bar(size=1, begin=0, end=float(rate), width=30),
        )
    console.print(table)
    saved_cols = ("hits", "hit tokens", "saved USD", "unpriced tokens")
    saved = titled_table(
        "Dollars saved by cache hits", "tenant", "layer", *saved_cols, numbers=saved_cols
    )
    for s in savings(engine, start, end)[:20]:
        saved.add_row(
            s.tenant,
            s.layer,
            f"{s.hits.events:,}",
            f"{s.hits.tokens:,}",
            f"{to_cents(s.hits.usd):,}",
            f"{s.hits.unpriced_tokens:,}",
        )
    console.print(saved)
    evicted = ("evictions", "evicted tokens", "cost pushed USD")
    top = titled_table(
        "Top evictors (of other tenants' entries)",
        "evicting tenant",
        "evicted tenant",
        *evicted,
        numbers=evicted,
    )
    top_evictors = evictors(engine, start, end)[:15]
    for e in top_evictors:
        top.add_row(
            e.evicting_tenant,
            e.evicted_tenant,
            f"{e.evictions:,}",
            f"{e.evicted_tokens:,}",
            f"{to_cents(e.pushed_usd):,}",
        )
    console.print(top)
    if not top_evictors:
        # An empty table reads like a broken join; say what it means.
        console.print(
            "no tenant evicted another tenant's entries in this span"
            " (`finops demo --incident cache-thrash` injects one, in an hour of its own;"
            " see the README's Energy and cache attribution)",
            style="dim",
        )
    if not providers:
        return
    prov_cols = ("input tokens", "read from cache", "rate")
    prov = titled_table(
        "Provider-side prefix hit rate (from usage)",
        "tenant",
        "route",
        "model",
        *prov_cols,
        numbers=prov_cols,
    )
    for p in provider_prefix_rates(engine, start, end):
        share = p.rate
        prov.add_row(
            p.tenant,
            p.route,
            p.model,
            f"{p.input_tokens:,}",
            f"{p.cache_read_tokens:,}",
            f"{float(share):.0%}" if share is not None else "-",
        )
    console.print(prov)


@app.command()
def reconcile(
    ledger: Annotated[
        bool, typer.Option("--ledger", help="recompute the windows from the retained usage log")
    ] = False,
    invoice: Annotated[
        Path | None,
        typer.Option(help="a provider invoice or usage export (CSV) to compare per day and model"),
    ] = None,
    threshold: Annotated[
        str, typer.Option(help="flag days whose tokens or cost drift more than this share")
    ] = "0.02",
) -> None:
    """Check the stored windows against an independent recomputation
    (--ledger), or metered usage against a provider's invoice (--invoice)."""
    from pipeline.spend.reconcile import reconcile_ledger

    if invoice is not None:
        raise typer.Exit(cli_finance.reconcile_invoice(invoice, Decimal(threshold)))
    if not ledger:
        raise typer.BadParameter(
            "say what to reconcile against: --ledger or --invoice FILE", param_hint="--ledger"
        )
    settings, services = _services()
    console.print("reading the usage log and recomputing the windows ...")
    rec = reconcile_ledger(
        services.kafka_url,
        services.database_url,
        settings.usage_topic,
        settings.admission(datetime.now(UTC)),
    )
    want, c = rec.ledger, rec.counters
    numbers = ("ledger (from the log)", "sink (PostgreSQL)")
    table = titled_table("ledger vs sink", "", *numbers, numbers=numbers)
    table.add_row(
        "lines in the log", str(want.produced), str(c.accepted + c.duplicates + c.dead_lettered)
    )
    table.add_row("counted", str(want.counted), str(c.accepted))
    table.add_row("duplicates", str(want.duplicates), str(c.duplicates))
    table.add_row("dead-lettered", str(want.dead_lettered), str(c.dead_lettered))
    table.add_row("windows", str(len(want.windows)), "")
    console.print(table)
    if rec.diffs:
        diffs = titled_table(
            f"{len(rec.diffs)} differing window columns",
            "window",
            "column",
            "ledger",
            "stored",
            numbers={"ledger", "stored"},
        )
        for d in rec.diffs[:50]:
            diffs.add_row(" ".join(str(k) for k in d.key), d.column, str(d.expected), str(d.stored))
        console.print(diffs)
    verdict = "equal" if rec.ok else "DIFFERENT"
    print(
        f"reconcile: {verdict} lost={rec.lost} double_counted={rec.double_counted}"
        f" differing_columns={len(rec.diffs)} balanced={'yes' if rec.balanced else 'no'}"
    )
    raise typer.Exit(0 if rec.ok else 1)


@dead_app.command("list")
def dead_list() -> None:
    """Dead letters by reason."""
    from pipeline.stream.dead_letter_replay import summary

    _, services = _services()
    table = titled_table(
        "dead letters", "reason", "count", "replayed", numbers={"count", "replayed"}
    )
    for row in summary(services.database_url):
        table.add_row(row.reason, str(row.count), str(row.replayed))
    console.print(table)


@dead_app.command("replay")
def dead_replay(
    reason: Annotated[str, typer.Option(help="reason prefix, e.g. ts_in_future or schema")],
) -> None:
    """Re-publish reviewed dead letters to the usage topic (safe to repeat)."""
    from pipeline.stream.dead_letter_replay import replay

    settings, services = _services()
    n = replay(
        services.database_url,
        services.kafka_url,
        settings.usage_topic,
        reason,
        max_message_bytes=settings.max_message_bytes,
        compression=settings.kafka_compression,
    )
    console.print(f"re-published {n} dead letters with reason {reason!r}")


@app.command()
def metrics() -> None:
    """Ingest counters and dead letters in the Prometheus text format."""
    from pipeline.stream.metrics import exposition

    _, services = _services()
    print(exposition(services.database_url), end="")


@app.command()
def chaos(
    scenario: Annotated[str, typer.Option(help="kill-worker, sink-error, rebalance, ...")],
    events: Annotated[int, typer.Option(help="simulated events to send")] = 100_000,
    seed: int = 1,
    kills: Annotated[int, typer.Option(help="kill-worker: random SIGKILLs")] = 20,
    stall_s: Annotated[float, typer.Option(help="broker-stall: seconds frozen")] = 20.0,
    keep: Annotated[bool, typer.Option(help="keep the run's database even if it passes")] = False,
) -> None:
    """Run a fault scenario against real workers; the last line is the verdict."""
    from pipeline.testbed.chaos.harness import Target, embedded_target
    from pipeline.testbed.chaos.run import run_scenario
    from pipeline.testbed.chaos.scenarios import SCENARIOS, Intensity

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"choose one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    settings = Settings()
    if settings.kafka_url and settings.database_url:
        target = Target(settings.kafka_url, settings.database_url)
    else:
        target = embedded_target(settings.home)
    with Progress(
        TextColumn("draining"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("drain", total=None)
        verdict = run_scenario(
            target,
            scenario,
            events,
            seed=seed,
            intensity=Intensity(kills=kills, stall_s=stall_s),
            keep=keep,
            say=console.print,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for line in verdict.details:
        console.print(f"  {line}", markup=False, highlight=False)
    for leak in verdict.leaks:
        console.print(f"  canary found in {leak}", markup=False)
    print(verdict.line())
    raise typer.Exit(0 if verdict.ok else 1)
