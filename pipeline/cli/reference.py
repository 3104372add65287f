"""``finops prices`` and ``finops carbon``: the versioned reference data that
prices usage and puts carbon on energy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from models import litellm_prices as price_litellm
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


def _skipped_table(skipped: dict[str, str], notes: dict[str, str], *, show: bool) -> None:
    """Every map entry with no price, grouped by reason (each one with
    ``--show-skipped``), and what was left out of the entries imported."""
    reasons: dict[str, list[str]] = {}
    for name, why in skipped.items():
        if "decimal places" in why:
            why = "more than 6 decimal places per Mtok (binary float noise in the map)"
        reasons.setdefault(why, []).append(name)
    table = titled_table("Not priced", "reason", "entries", "examples", numbers=("entries",))
    for why, names in sorted(reasons.items(), key=lambda x: -len(x[1])):
        table.add_row(why, str(len(names)), ", ".join(sorted(names)[:3]))
    console.print(table)
    if show:
        for name, why in sorted(skipped.items()):
            console.print(f"skipped {name}: {why}")
        for name, note in sorted(notes.items()):
            console.print(f"partly {name}: {note}")
    elif notes:
        console.print(
            f"{len(notes)} entries priced without a part LiteLLM applies only on request"
            " (off-peak windows, location multipliers); --show-skipped lists them"
        )


def _read_litellm(file: Path, when: datetime) -> price_litellm.LiteLLMImport:
    try:
        return price_litellm.parse_litellm(file.read_text(encoding="utf-8"), when)
    except ValueError as exc:
        console.print(f"[red]{file}: {exc}[/]")
        raise typer.Exit(1) from exc


@prices_app.command("import-litellm")
def prices_import_litellm(
    file: Path,
    effective_from: Annotated[str | None, typer.Option(help="RFC 3339; default now")] = None,
    show_skipped: Annotated[bool, typer.Option(help="list every entry not priced")] = False,
) -> None:
    """Import LiteLLM's model_prices_and_context_window.json: every chat
    model's token kinds, service tiers, prompt-size thresholds and regions."""
    from pipeline.spend.price_store import describe, load_book

    when = parse_time(effective_from) if effective_from else datetime.now(UTC)
    imported = _read_litellm(file, when)
    _skipped_table(imported.skipped, imported.notes, show=show_skipped)
    known = {e.entry_key for e in load_book(db.engine(database_url())).entries}
    new = [e for e in imported.entries if e.entry_key not in known]
    for e in new[:20]:
        console.print(f"new {describe(e)}")
    if len(new) > 20:
        console.print(f"... and {len(new) - 20} more new entries")
    _load(imported.entries, f"litellm:{file.name}")


@prices_app.command("sync")
def prices_sync(
    file: Path,
    dry_run: Annotated[bool, typer.Option(help="show the changes, load nothing")] = False,
) -> None:
    """Compare a newer LiteLLM map with the book and add versions, effective
    now, only for the prices that changed: history is never re-priced."""
    from models.price_sync import sync
    from pipeline.spend.price_store import load_book

    now = datetime.now(UTC)
    imported = _read_litellm(file, now)
    plan = sync(load_book(db.engine(database_url())), imported.entries, now)
    table = titled_table(
        "Price changes (USD per million tokens)",
        "model", "provider", "region", "tier", "from tokens", "rate", "book", "map",
        numbers=("from tokens", "book", "map"),
    )  # fmt: skip
    for c in plan.changes:
        model, provider, region, tier = c.key
        table.add_row(
            model, provider, region, tier, f"{c.from_input_tokens:,}", c.rate,
            "" if c.old is None else str(c.old), "" if c.new is None else str(c.new),
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{len(plan.new_keys)} new keys, {len(plan.changes)} changed rates,"
        f" {plan.unchanged} keys unchanged; {len(plan.gone)} in the book but not in the map"
        f" (kept); {len(imported.skipped)} map entries not priced"
    )
    if dry_run or not plan.added:
        console.print("dry run: nothing loaded" if dry_run else "nothing to load")
        return
    _load(plan.added, f"litellm-sync:{file.name}")


@prices_app.command("list")
def prices_list(model: Annotated[str | None, typer.Option(help="only this model")] = None) -> None:
    """Show every price version."""
    from pipeline.spend.price_store import load_book

    book = load_book(db.engine(database_url()))
    table = titled_table(
        "USD per million tokens",
        "model", "provider", "region", "tier", "from tokens", "effective from", "input", "output",
        "cache read", "cache write", "1h write", "reasoning", "batch disc.",
        numbers=("from tokens", "input", "output", "cache read", "cache write", "1h write",
                 "reasoning", "batch disc."),
    )  # fmt: skip
    for e in sorted(book.entries, key=lambda e: (*e.key, e.effective_from, e.from_input_tokens)):
        if model and e.model != model:
            continue
        table.add_row(
            e.model, e.provider, e.region, e.service_tier, f"{e.from_input_tokens:,}",
            e.effective_from.isoformat(), str(e.input_per_mtok), str(e.output_per_mtok),
            str(e.cache_read_per_mtok), str(e.cache_write_per_mtok),
            "" if e.cache_write_1h_per_mtok is None else str(e.cache_write_1h_per_mtok),
            "" if e.reasoning_per_mtok is None else str(e.reasoning_per_mtok),
            str(e.batch_discount),
        )  # fmt: skip
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
