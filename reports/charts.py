"""Charts as inline SVG (matplotlib, no browser-side code), text kept as text
so the page stays searchable and readable by tests and screen readers."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import matplotlib
import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.tenant_view import AlertView, CachePoint, SpendPoint

# Figures are built without pyplot, which keeps global state: the web server
# renders pages in several threads at once.
matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "finops"})
MINUTES_PER_DAY: Final = 1440  # matplotlib dates count days
SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#e67e22", "info": "#2980b9"}


def _svg(fig: Figure) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prologue: it is inlined in HTML


def _x(ts: datetime) -> float:
    return float(mdates.date2num(ts))  # type: ignore[no-untyped-call]


def _time_axis(ax: Axes) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    ax.spines[["top", "right"]].set_visible(False)


def spend_svg(points: Sequence[SpendPoint], alerts: Sequence[AlertView], bucket_min: int) -> str:
    """Spend per bucket as bars, and a marker line where each alert fired."""
    fig = Figure(figsize=(9, 2.8))
    ax = fig.subplots()
    fig.set_gid("spend-chart")
    ax.bar(
        [_x(p.bucket) for p in points],
        [float(p.cost_usd) for p in points],  # drawing only: the numbers shown are Decimal
        width=bucket_min / MINUTES_PER_DAY * 0.9,
        align="edge",
        color="#4a6fa5",
    )
    for a in alerts:
        ax.axvline(
            _x(a.fired_at),
            color=SEVERITY_COLOURS.get(a.severity, "#555"),
            linestyle="--",
            linewidth=1.2,
            gid=f"alert-marker-{a.id}",
        )
        ax.annotate(
            a.rule,
            (_x(a.fired_at), 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color=SEVERITY_COLOURS.get(a.severity, "#555"),
        )
    ax.set_ylabel(f"USD per {bucket_min} min")
    _time_axis(ax)
    fig.autofmt_xdate()
    return _svg(fig)


def hit_rate_svg(points: Sequence[CachePoint]) -> str:
    """Request-weighted hit rate per cache layer over time."""
    fig = Figure(figsize=(9, 2.2))
    ax = fig.subplots()
    fig.set_gid("cache-chart")
    by_layer: dict[str, list[CachePoint]] = defaultdict(list)
    for p in points:
        if p.hit_rate is not None:
            by_layer[p.layer].append(p)
    for layer, series in sorted(by_layer.items()):
        ax.plot(
            [_x(p.bucket) for p in series],
            [float(p.hit_rate or 0) * 100 for p in series],
            label=layer,
            marker=".",
        )
    ax.set_ylim(0, 100)
    ax.set_ylabel("hit rate %")
    _time_axis(ax)
    if by_layer:
        ax.legend(loc="lower left", fontsize=7, frameon=False)
    fig.autofmt_xdate()
    return _svg(fig)


def bars(labels: Sequence[str], values: Sequence[float], ylabel: str, gid: str) -> Figure:
    """A plain bar chart (values are for drawing only: documents print the
    exact numbers next to it)."""
    fig = Figure(figsize=(7, 2.4))
    fig.set_gid(gid)
    ax = fig.subplots()
    ax.bar(range(len(values)), values, color="#4a6fa5")
    # A "$" in a name would start matplotlib's math text: shown as it is.
    shown = [label.replace("$", r"\$") for label in labels]
    ax.set_xticks(range(len(labels)), shown, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def svg(fig: Figure) -> str:
    return _svg(fig)


def png(fig: Figure) -> bytes:
    """PNG bytes with no timestamp or version in them: the same figure gives
    the same bytes, so a re-rendered document is byte-identical."""
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    return out.getvalue()
