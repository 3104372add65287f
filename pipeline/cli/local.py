"""``finops up|down|status``, ``finops db upgrade`` and ``finops demo``: the
embedded services on this machine, and the whole system in one command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

import typer

from pipeline.cli.common import check_incident, console, database_url, services
from pipeline.cli.publish import publish_simulation
from pipeline.cli.reference import load_carbon
from pipeline.cli.run import drain_with_progress
from pipeline.cli.views import print_cache, print_energy, print_spend
from pipeline.embedded import runtime
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.stream.offsets import forget_offsets


def up() -> None:
    """Start the embedded broker and PostgreSQL in the background (reusing running ones)."""
    settings = Settings()
    started = runtime.up(settings.home)
    if started.fresh_broker:
        forget_offsets(started.database_url)
    console.print(f"broker    [bold]{started.kafka_url}[/]  (in-memory: for trying and testing)")
    console.print(f"postgres  [bold]{started.database_url}[/]")
    console.print(f"state     {settings.home}")


def down() -> None:
    """Stop the embedded services (the broker's messages are gone; PostgreSQL data stays)."""
    stopped = runtime.down(Settings().home)
    for name, was in stopped.items():
        console.print(f"{name:9} {'stopped' if was else 'was not running'}")


def status() -> None:
    """Show the embedded services and their URLs."""
    info = runtime.status(Settings().home)
    console.print_json(json.dumps(info))


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations (the only way the schema is created)."""
    url = database_url()
    db.upgrade(url, revision)
    console.print(f"schema at revision [bold]{db.current_revision(url)}[/]")


@db_app.command("retention")
def db_retention(
    dry_run: Annotated[bool, typer.Option(help="say what would be dropped, drop nothing")] = False,
) -> None:
    """Drop seen_event days past the dedup horizon and, with
    FINOPS_MINUTE_RETENTION_MONTHS, months of minute spend windows (the hourly
    and daily roll-ups keep every amount). The worker does this every hour."""
    from pipeline.storage import retention

    settings, now = Settings(), datetime.now(UTC)
    h = settings.horizons(now)
    done = retention.run(db.engine(database_url()), h, now, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    for table, gone in done.dropped.items():
        first = h.seen_event if table == "seen_event" else h.spend_window
        keeps = f"from {first}" if first else "everything (FINOPS_MINUTE_RETENTION_MONTHS unset)"
        console.print(
            f"{table:13} keeps {keeps}: {verb} {len(gone)} partitions,"
            f" {done.kept[table]} left{': ' + ', '.join(gone) if gone else ''}"
        )


def demo(
    rate: Annotated[float, typer.Option(help="requests per second of event time")] = 20.0,
    incident: Annotated[
        str | None,
        typer.Option(help="inject one incident (see finops simulate --list-incidents)"),
    ] = None,
) -> None:
    """The whole system in one command: services, schema, prices, an hour of traffic, drain."""
    from pipeline.energy.carbon_store import defaults
    from pipeline.spend.price_store import default_prices, load_entries
    from pipeline.testbed.demo_hours import DemoRun, HourTaken, must_publish
    from pipeline.testbed.demo_store import claim_hour, demo_at, mark_published
    from pipeline.testbed.simulate.usage import SimConfig

    check_incident(incident)

    settings, found = services()
    console.rule("finops demo")
    console.print(f"broker   {found.kafka_url}\npostgres {found.database_url}")
    db.upgrade(found.database_url)
    engine = db.engine(found.database_url)
    result = load_entries(engine, default_prices(), "default")
    console.print(f"price book: {result.inserted} new, {result.unchanged} already loaded")
    load_carbon(engine, defaults())
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
            found, settings, cfg, settings.events_per_message, side=True,
            continues=before is not None and before.complete,
        )  # fmt: skip
        mark_published(engine, start)
    else:
        console.print(f"{span} already holds this demo; showing it without publishing it again")
    drain_with_progress(settings, found)
    print_spend(engine, start, end, ("tenant",))
    print_energy(engine, start, end, ("model",))
    print_cache(engine, start, end, 10)
    console.print(
        "\nData: PostgreSQL tables spend_window, energy_window, cache_window, dead_letter at "
        f"{found.database_url}"
        "\nTry:  finops spend --by tenant,feature   ·   finops energy --by batch_bucket,cache_state"
        "\n      finops cache   ·   finops status   ·   finops down"
    )
