"""``finops report sustainability``: a month's energy and carbon, for the
people who have to defend the numbers.

Energy in kWh with measured (GPU telemetry, split by attribution) and
estimated (external APIs, per-model coefficients) always apart, and the
idle energy of the self-hosted fleet as its own line; location-based
operational gCO2e, embodied gCO2e and the SCI per 1,000 tokens; tokens per
joule by model, batch bucket and cache state, per tenant and per grid region. The method
statement (pipeline.energy.footprint.METHOD) is part of every output.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from markupsafe import Markup
from sqlalchemy import Engine

from models.months import bounds
from pipeline.energy.footprint import METHOD, MJ_PER_KWH, Footprint
from reports import charts
from reports.carbon import carbon
from reports.render import render

# Energy-window columns, then the grid region (last: it comes from the site).
BREAKDOWNS: Final = ("model", "batch_bucket", "cache_state", "tenant", "region")
COLUMNS: Final = (
    "dimension", "value", "source", "tokens", "energy_kwh", "tokens_per_joule",
    "operational_gco2e", "embodied_gco2e", "sci_gco2e_per_1k_tokens",
)  # fmt: skip


def _q(x: Decimal, places: str) -> Decimal:
    return x.quantize(Decimal(places), ROUND_HALF_EVEN)


def _row(dimension: str, value: str, source: str, f: Footprint) -> dict[str, Any]:
    sci = f.sci_per_1k_tokens
    return {
        "dimension": dimension,
        "value": value,
        "source": source,
        "tokens": f.tokens,
        "energy_kwh": str(_q(Decimal(f.energy_mj) / MJ_PER_KWH, "0.000001")),
        "energy_mj": f.energy_mj,
        "tokens_per_joule": (
            str(_q(Decimal(f.tokens) * 1000 / f.energy_mj, "0.0001")) if f.energy_mj else None
        ),
        "operational_gco2e": str(_q(f.operational_g, "0.001")),
        "embodied_gco2e": str(_q(f.embodied_g, "0.001")),
        "sci_gco2e_per_1k_tokens": str(_q(sci, "0.000001")) if sci is not None else None,
    }


def sustainability(engine: Engine, m: date) -> dict[str, bytes]:
    start, end = bounds(m)
    # One read at the finest grain (every breakdown, then the region, then
    # the source); each breakdown and the totals are sums of its footprints.
    result = carbon(engine, start, end, BREAKDOWNS[:-1], by_region=True)
    rows: list[dict[str, Any]] = []
    for i, dim in enumerate(BREAKDOWNS):
        rolled: dict[tuple[str, str], Footprint] = {}
        for key, f in result.groups.items():
            rolled.setdefault((key[i], key[-1]), Footprint()).add(f)
        rows += [_row(dim, value, source, f) for (value, source), f in sorted(rolled.items())]
    by_source: dict[str, Footprint] = {}
    for key, f in result.groups.items():
        by_source.setdefault(key[-1], Footprint()).add(f)
    totals = {
        "measured": _row("total", "all", "measured", by_source.get("measured", Footprint())),
        "estimated": _row("total", "all", "estimated", by_source.get("estimated", Footprint())),
        "idle": _row("total", "idle", "measured", result.idle),
        "fleet": _row("total", "fleet", "all", result.fleet),
    }
    name = f"sustainability-{m:%Y-%m}"
    doc = {"month": f"{m:%Y-%m}", "method": METHOD, "totals": totals, "rows": rows}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([*totals.values(), *rows])
    by_model = [r for r in rows if r["dimension"] == "model" and r["tokens_per_joule"]]
    chart = charts.bars(
        [f"{r['value']} ({r['source'][:4]})" for r in by_model],
        [float(r["tokens_per_joule"]) for r in by_model],
        "tokens per joule",
        "tokens-per-joule",
    )
    page = render(
        "sustainability.html.j2",
        month=m,
        totals=totals,
        rows=rows,
        breakdowns=BREAKDOWNS,
        method=METHOD,
        chart=Markup(charts.svg(chart)),  # our own SVG: safe to inline
    )
    return {
        f"{name}.csv": out.getvalue().encode(),
        f"{name}.json": json.dumps(doc, indent=2, sort_keys=True).encode(),
        f"{name}.html": page.encode(),
    }
