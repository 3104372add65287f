"""Chargeback documents, rendered once at month close and stored as bytes.

Per tenant (cost centre) an HTML page and a PDF with the lines, the total,
the rounding rule and charts (spend by feature and by day, top routes);
across tenants a finance summary (HTML) and the ledger (CSV). Everything
here is a pure function of the frozen lines, so the same month renders to
the same bytes.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Final
from xml.sax.saxutils import escape

from markupsafe import Markup
from matplotlib.figure import Figure
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from models.chargeback_policy import ChargebackPolicy
from pipeline.finance.forecast import METHOD as FORECAST_METHOD
from pipeline.finance.forecast import Forecast
from pipeline.finance.lines import KIND_ORDER, ROUNDING_RULE, Line, total
from reports import charts
from reports.names import csv_cell
from reports.render import render, usd

LEDGER_COLUMNS: Final = (
    "month", "tenant", "line", "kind", "description", "feature", "route", "provider", "model",
    "quantity", "list_cost_usd", "discount_usd", "effective_cost_usd", "amount_usd", "adjusts",
)  # fmt: skip
USAGE_KINDS: Final = ("usage", "retries", "failed")
KIND_TITLES: Final = {
    "usage": "Usage (first attempts that succeeded)",
    "retries": "Retries",
    "failed": "Failed first attempts",
    "shared": "Shared costs",
    "adjustment": "Adjustments for earlier months",
}


@dataclass(frozen=True)
class SkuUse:
    """A tenant's month of one token kind of one model (every attempt): the
    kinds of a model add up to its usage, retries and failures."""

    provider: str
    model: str
    sku: str  # provider/model/kind, as in the FOCUS export
    meter: str
    tokens: int
    cost: Decimal  # exact


@dataclass(frozen=True)
class TenantDoc:
    tenant: str
    month: date
    closed_at: datetime
    lines: list[Line]
    daily: list[tuple[date, Decimal]]
    skus: list[SkuUse] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return total(self.lines)

    def by_kind(self) -> list[tuple[str, list[Line], Decimal]]:
        out = []
        for kind in KIND_ORDER:
            rows = [x for x in self.lines if x.kind == kind]
            if rows:
                out.append((KIND_TITLES[kind], rows, total(rows)))
        return out

    def top(self, attr: str, n: int = 10) -> list[tuple[str, Decimal]]:
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for x in self.lines:
            if x.kind in ("usage", "retries", "failed"):
                sums[getattr(x, attr)] += x.amount
        return sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _figures(doc: TenantDoc) -> dict[str, Figure]:
    features = doc.top("feature")
    return {
        "by_feature": charts.bars(
            [f for f, _ in features], [float(v) for _, v in features], "USD", "by-feature"
        ),
        "by_day": charts.bars(
            [f"{d:%d}" for d, _ in doc.daily], [float(v) for _, v in doc.daily], "USD", "by-day"
        ),
    }


def tenant_html(doc: TenantDoc) -> bytes:
    # Our own SVG: safe to inline unescaped.
    figures = {k: Markup(charts.svg(f)) for k, f in _figures(doc).items()}
    page = render(
        "chargeback.html.j2",
        doc=doc,
        charts=figures,
        rounding=ROUNDING_RULE,
        routes=doc.top("route"),
    )
    return page.encode()


def tenant_pdf(doc: TenantDoc) -> bytes:
    styles = getSampleStyleSheet()
    out = io.BytesIO()
    pdf = SimpleDocTemplate(
        out,
        pagesize=A4,
        invariant=1,  # no creation date or random id: the same month, the same bytes
        title=f"Chargeback {escape(doc.tenant)} {doc.month:%Y-%m}",
        author="finops",
        leftMargin=1.5 * cm,
        rightMargin=1.5 * cm,
        topMargin=1.5 * cm,
        bottomMargin=1.5 * cm,
    )
    story: list[object] = [
        # Paragraphs read markup: every name in one is escaped.
        Paragraph(f"Chargeback: {escape(doc.tenant)}", styles["Title"]),
        Paragraph(
            f"Month {doc.month:%Y-%m} · closed {doc.closed_at:%Y-%m-%d %H:%M} UTC", styles["Normal"]
        ),
        Spacer(1, 0.3 * cm),
        Paragraph(f"Total {usd(doc.total)}", styles["Heading1"]),
    ]
    figures = _figures(doc)
    for title, key in (("Spend by feature", "by_feature"), ("Spend by day", "by_day")):
        story += [
            Paragraph(title, styles["Heading3"]),
            Image(io.BytesIO(charts.png(figures[key])), width=16 * cm, height=5.2 * cm),
        ]
    rows = [["Line", "Feature / route / model", "List", "Discount", "Amount"]]
    for title, lines, subtotal in doc.by_kind():
        rows.append([title, "", "", "", usd(subtotal)])
        for x in lines:
            what = " / ".join(p for p in (x.feature, x.route, x.model) if p) or x.description
            rows.append(
                [x.description[:48], what[:60], usd(x.list_cost), usd(x.discount), usd(x.amount)]
            )
    rows.append(["Total", "", "", "", usd(doc.total)])
    table = _table(rows, [5 * cm, 6 * cm, 2.2 * cm, 2 * cm, 2.3 * cm])
    story += [Spacer(1, 0.3 * cm), table, Spacer(1, 0.3 * cm)]
    if doc.skus:
        skus = [["SKU", "Meter", "Tokens", "Cost"]] + [
            [u.sku[:60], u.meter, f"{u.tokens:,}", usd(u.cost)] for u in doc.skus
        ]
        story += [
            Paragraph("By token kind (every attempt)", styles["Heading3"]),
            _table(skus, [7.5 * cm, 5 * cm, 2.5 * cm, 2.5 * cm], total=False),
            Spacer(1, 0.3 * cm),
        ]
    story.append(Paragraph(f"Rounding: {ROUNDING_RULE}", styles["Italic"]))
    pdf.build(story)
    return out.getvalue()


def _table(rows: list[list[str]], widths: list[float], *, total: bool = True) -> Table:
    table = Table(rows, repeatRows=1, colWidths=widths)
    table.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 0), (-1, -1), 7),
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                *([("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold")] if total else []),
                ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.grey),
                *([("LINEABOVE", (0, -1), (-1, -1), 0.5, colors.grey)] if total else []),
            ]
        )
    )
    return table


def summary_html(
    m: date,
    closed_at: datetime,
    docs: Sequence[TenantDoc],
    policy: ChargebackPolicy,
    forecasts: Mapping[str, Forecast],
) -> bytes:
    rows = []
    for d in docs:
        kinds = {k: total([x for x in d.lines if x.kind == k]) for k in KIND_ORDER}
        rows.append((d.tenant, kinds, d.total))
    grand = sum((d.total for d in docs), Decimal(0))
    usage = {d.tenant: total([x for x in d.lines if x.kind in USAGE_KINDS]) for d in docs}
    kind_totals = {k: sum((r[1][k] for r in rows), Decimal(0)) for k in KIND_ORDER}
    page = render(
        "finance_summary.html.j2",
        month=m,
        closed_at=closed_at,
        rows=rows,
        kinds=KIND_ORDER,
        titles=KIND_TITLES,
        kind_totals=kind_totals,
        grand=grand,
        policy=policy,
        rounding=ROUNDING_RULE,
        forecasts={t: f for t, f in forecasts.items() if t in usage},
        usage=usage,
        method=FORECAST_METHOD,
    )
    return page.encode()


def ledger_csv(m: date, lines: Sequence[Line]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LEDGER_COLUMNS)
    for n, x in enumerate(lines, 1):
        writer.writerow(
            [
                f"{m:%Y-%m}", *map(csv_cell, (x.tenant,)), n, x.kind,
                *map(csv_cell, (x.description, x.feature, x.route, x.provider, x.model)),
                x.quantity, f"{x.list_cost:f}", f"{x.discount:f}", f"{x.effective_cost:f}",
                f"{x.amount:f}",
                f"{x.adjusts:%Y-%m}" if x.adjusts else "",
            ]
        )  # fmt: skip
    return out.getvalue().encode()


def render_month(
    m: date,
    closed_at: datetime,
    lines: Sequence[Line],
    daily: Mapping[str, list[tuple[date, Decimal]]],
    policy: ChargebackPolicy,
    forecasts: Mapping[str, Forecast] | None = None,
    skus: Mapping[str, list[SkuUse]] | None = None,
) -> dict[tuple[str, str], bytes]:
    """Every document of the month: (tenant, html|pdf) per tenant, and
    ('', html) for the finance summary and ('', csv) for the ledger."""
    by_tenant: dict[str, list[Line]] = defaultdict(list)
    for x in lines:
        by_tenant[x.tenant].append(x)
    docs = [
        TenantDoc(t, m, closed_at, rows, daily.get(t, []), (skus or {}).get(t, []))
        for t, rows in sorted(by_tenant.items())
    ]
    out: dict[tuple[str, str], bytes] = {}
    for d in docs:
        out[(d.tenant, "html")] = tenant_html(d)
        out[(d.tenant, "pdf")] = tenant_pdf(d)
    out[("", "html")] = summary_html(m, closed_at, docs, policy, forecasts or {})
    out[("", "csv")] = ledger_csv(m, lines)
    return out
