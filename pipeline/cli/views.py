"""``finops spend|energy|cache``: what the windows say, as tables. Each
``print_*`` renders one view from PostgreSQL (the demo prints them too)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

import typer
from rich.bar import Bar
from rich.table import Table
from sqlalchemy import Engine

from models.money import to_cents
from pipeline.cli import scrape
from pipeline.cli.common import between, console, database_url, dimensions, parse_time, titled_table
from pipeline.energy.footprint import MJ_PER_KWH
from pipeline.storage import db


def print_spend(
    engine: Engine, start: datetime | None, end: datetime | None, by: tuple[str, ...]
) -> None:
    from reports.spend import spend, time_range

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


def spend_cmd(
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or date")] = None,
    to: Annotated[str | None, typer.Option(help="RFC 3339 or date (exclusive)")] = None,
    by: Annotated[
        str, typer.Option(help="comma list of tenant,route,feature,provider,model")
    ] = "tenant",
) -> None:
    """Spend from the windows in PostgreSQL."""
    engine = db.engine(database_url())
    try:
        print_spend(
            engine,
            parse_time(from_) if from_ else None,
            parse_time(to) if to else None,
            dimensions(by),
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


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

    start, end = between(from_, to)
    try:
        print_energy(db.engine(database_url()), start, end, dimensions(by))
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if method:
        console.print(f"\n[bold]Carbon method[/]\n{METHOD}")


def _kwh(mj: int) -> str:
    return f"{Decimal(mj) / MJ_PER_KWH:.4f}"


def _grams(g: Decimal) -> str:
    return f"{g.quantize(Decimal('0.001')):,}"


def print_energy(engine: Engine, start: datetime, end: datetime, dims: tuple[str, ...]) -> None:
    from reports.carbon import carbon
    from reports.energy import energy, node_totals

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


cache_app = typer.Typer(
    help="Shared-cache hit rate over time, the top evictors, and (--providers) the providers'"
    " own prefix-cache hit rate; `finops cache scrape` reads serving nodes' counters.",
    invoke_without_command=True,
)
cache_app.command("scrape")(scrape.cache_scrape)


@cache_app.callback()
def cache_cmd(
    ctx: typer.Context,
    from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or date")] = None,
    to: Annotated[str | None, typer.Option(help="RFC 3339 or date (exclusive)")] = None,
    minutes: Annotated[int, typer.Option(help="time bucket")] = 10,
    providers: Annotated[
        bool, typer.Option(help="also the providers' prefix hit rate per tenant, route, model")
    ] = False,
) -> None:
    """Shared-cache hit rate over time, the top evictors, and (--providers) the
    providers' own prefix-cache hit rate from usage."""
    if ctx.invoked_subcommand is not None:
        return
    start, end = between(from_, to)
    print_cache(db.engine(database_url()), start, end, minutes, providers)


def print_cache(
    engine: Engine, start: datetime, end: datetime, minutes: int, providers: bool = False
) -> None:
    from reports.cache import evictors, hit_rates, provider_prefix_rates, savings

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
            " see docs/guides/energy-and-cache.md)",
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
