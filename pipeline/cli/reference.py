"""``finops prices`` and ``finops carbon``: the versioned reference data that
prices usage and puts carbon on energy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine

from models import prices as price_parsers
from models.carbon import GpuEmbodied, GridIntensity, Site, parse_csv
from pipeline.cli.common import console, database_url, parse_time, titled_table
from pipeline.storage import db
from pipeline.storage.revisions import LoadResult

prices_app = typer.Typer(help="The versioned price book.", no_args_is_help=True)


def _read_prices(path: Path) -> list[price_parsers.PriceEntry]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        return price_parsers.parse_yaml(text)
    return price_parsers.parse_csv(text)


def _refuse_conflicts(result: LoadResult, why: str) -> None:
    """A load that would rewrite a stored version loads nothing: say which, and exit 1."""
    if result.conflicts:
        for c in result.conflicts:
            console.print(f"[red]conflict[/] {c}")
        console.print(why)
        raise typer.Exit(1)


def _load(entries: list[price_parsers.PriceEntry], source: str) -> None:
    from pipeline.spend.price_store import load_entries, reprice

    engine = db.engine(database_url())
    result = load_entries(engine, entries, source)
    _refuse_conflicts(result, "nothing loaded: publish a new version with a later effective_from")
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

    book = load_book(db.engine(database_url()))
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

    result = reprice(db.engine(database_url()))
    console.print(
        f"repriced {result.events} events (+${result.cost_usd}); "
        f"{result.still_unpriced} still have no price"
    )


carbon_app = typer.Typer(
    help="Carbon reference data: grid intensity, embodied emissions, sites.",
    no_args_is_help=True,
)


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
    load_carbon(db.engine(database_url()), rows if intensity or embodied or sites else defaults())


def load_carbon(engine: Engine, rows: Sequence[GridIntensity | GpuEmbodied | Site]) -> None:
    from pipeline.energy.carbon_store import load_rows

    result = load_rows(engine, rows)
    _refuse_conflicts(result, "nothing loaded")
    console.print(f"carbon data: {result.inserted} new rows, {result.unchanged} already loaded")


@carbon_app.command("list")
def carbon_list() -> None:
    """The carbon book in force."""
    from pipeline.energy.carbon_store import load_book

    book = load_book(db.engine(database_url()))
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
