"""``finops month close``, ``finops report``, ``finops forecast`` and
``finops reconcile --invoice``: the commands finance runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import typer

from models.chargeback_policy import ChargebackPolicy, PolicyError, parse_policy
from models.months import MonthError, next_month, parse_month
from pipeline.cli.common import console, database_url, titled_table
from pipeline.finance.close import close_month, stored_month
from pipeline.storage import db
from reports.names import file_slug

month_app = typer.Typer(help="Close a month into chargeback documents.", no_args_is_help=True)
report_app = typer.Typer(help="Finance and sustainability exports.", no_args_is_help=True)
Month = Annotated[str, typer.Argument(help="YYYY-MM")]
MonthOption = Annotated[str, typer.Option("--month", help="YYYY-MM")]
OutDir = Annotated[Path, typer.Option("--out", help="directory to write into")]


def _policy(path: Path | None) -> ChargebackPolicy:
    from importlib import resources

    try:
        if path is None:
            return parse_policy(
                resources.files("models").joinpath("data/chargeback.yaml").read_text()
            )
        return parse_policy(path.read_text())
    except PolicyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


def _month(value: str) -> date:
    try:
        return parse_month(value)
    except MonthError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _write(out: Path, name: str, content: bytes) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_bytes(content)
    return path


def _file_name(month: date, tenant: str, fmt: str) -> str:
    """The document's file name: a tenant's name only as a safe slug and hash."""
    if tenant:
        return f"chargeback-{month:%Y-%m}-{file_slug(tenant)}.{fmt}"
    name, _, ext = fmt.rpartition(".")
    if name:  # focus.csv, focus.parquet
        return f"{name}-{month:%Y-%m}.{ext}"
    return f"{'finance-summary' if fmt == 'html' else 'ledger'}-{month:%Y-%m}.{fmt}"


@month_app.command("close")
def month_close(
    month: Month,
    policy: Annotated[
        Path | None, typer.Option(help="chargeback policy YAML (default: the packaged one)")
    ] = None,
    out: OutDir = Path("chargeback"),
) -> None:
    """Freeze MONTH into per-tenant documents, a finance summary and a ledger.

    Idempotent: a closed month is never recomputed; closing it again writes
    the stored documents, byte for byte."""
    m = _month(month)
    url = database_url()
    db.upgrade(url)
    try:
        closed = close_month(db.engine(url), m, _policy(policy))
    except MonthError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    for (tenant, fmt), content in sorted(closed.documents.items()):
        _write(out / f"{m:%Y-%m}", _file_name(m, tenant, fmt), content)
    state = "closed" if closed.fresh else "was already closed"
    tenants = len({t for t, _ in closed.documents if t})
    console.print(
        f"{m:%Y-%m} {state} at {closed.closed_at:%Y-%m-%d %H:%M} UTC: {tenants} tenants, "
        f"total ${closed.total:,}; documents in {out / f'{m:%Y-%m}'}"
    )


@report_app.command("chargeback")
def report_chargeback(
    month: MonthOption,
    format: Annotated[Literal["html", "pdf", "csv"], typer.Option(help="html|pdf|csv")] = "html",
    tenant: Annotated[str | None, typer.Option(help="only this tenant's document")] = None,
    out: OutDir = Path("chargeback"),
) -> None:
    """Write a closed month's documents (html, pdf: per tenant and, for html,
    the finance summary; csv: the ledger)."""
    m = _month(month)
    with db.engine(database_url()).connect() as conn:
        closed = stored_month(conn, m)
    if closed is None:
        console.print(f"[red]{m:%Y-%m} is not closed: run finops month close {m:%Y-%m}[/]")
        raise typer.Exit(1)
    wanted = [
        (t, f)
        for (t, f) in sorted(closed.documents)
        if f == format and (tenant is None or t == tenant) and (t or tenant is None)
    ]
    if not wanted:
        console.print("[red]no such document[/]")
        raise typer.Exit(1)
    for t, f in wanted:
        path = _write(out / f"{m:%Y-%m}", _file_name(m, t, f), closed.documents[(t, f)])
        console.print(str(path))


@report_app.command("focus")
def report_focus(month: MonthOption, out: OutDir = Path("focus")) -> None:
    """FOCUS 1.2 cost and usage rows for MONTH, as CSV and Parquet. A closed
    month's are the ones frozen at close; an open month's are provisional."""
    from reports import focus

    m = _month(month)
    with db.engine(database_url()).connect() as conn:
        closed = stored_month(conn, m)
        if closed is not None and (("", "focus.csv") in closed.documents):
            csv_bytes = closed.documents[("", "focus.csv")]
            parquet = closed.documents[("", "focus.parquet")]
            state = "closed"
        else:
            df = focus.frame(focus.usage_rows(conn, m))
            csv_bytes, parquet, state = focus.to_csv(df), focus.to_parquet(df), "provisional"
    for suffix, content in (("csv", csv_bytes), ("parquet", parquet)):
        console.print(str(_write(out, f"focus-{m:%Y-%m}.{suffix}", content)))
    console.print(f"FOCUS {focus.VERSION} rows for {m:%Y-%m} ({state})")


@report_app.command("sustainability")
def report_sustainability(month: MonthOption, out: OutDir = Path("sustainability")) -> None:
    """Energy (measured and estimated apart), carbon and SCI for MONTH, as
    CSV, JSON and an HTML page with charts, with the method statement."""
    from reports.sustainability import sustainability

    m = _month(month)
    files = sustainability(db.engine(database_url()), m)
    for name, content in sorted(files.items()):
        console.print(str(_write(out, name, content)))


def forecast(
    month: Annotated[str | None, typer.Option(help="YYYY-MM (default: this month)")] = None,
    by: Annotated[
        Literal["tenant", "feature", "model"], typer.Option(help="tenant|feature|model")
    ] = "tenant",
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="YYYY-MM-DD: forecast as if on this day")
    ] = None,
) -> None:
    """Month-to-date spend and a forecast to month end, with an 80% interval."""
    from pipeline.finance.close import daily_spend
    from pipeline.finance.forecast import METHOD, forecasts

    today = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    m = _month(month) if month else today.replace(day=1)
    known_until = min(today, next_month(m))
    with db.engine(database_url()).connect() as conn:
        daily = daily_spend(
            conn, m, by=by, before_days=28, until=datetime.combine(known_until, time(), UTC)
        )
    numbers = ("month to date", "forecast", "80% interval")
    table = titled_table(
        f"Forecast {m:%Y-%m} by {by}, known through {known_until - timedelta(days=1)}",
        by,
        *numbers,
        numbers=numbers,
    )
    total_mtd = total_expected = Decimal(0)
    for key, f in forecasts(daily, m, known_days=max((known_until - m).days, 0)).items():
        total_mtd += f.month_to_date
        total_expected += f.expected
        table.add_row(
            key, f"${f.month_to_date:,.2f}", f"${f.expected:,}", f"${f.low:,} to ${f.high:,}"
        )
    table.add_row("total", f"${total_mtd:,.2f}", f"${total_expected:,}", "")
    console.print(table)
    console.print(f"Method: {METHOD}", style="dim")


def _pct(d: Decimal | None) -> str:
    return "-" if d is None else f"{d:+.2%}"


def reconcile_invoice(invoice: Path, threshold: Decimal) -> int:
    """Print the drift table and the tokenizer-drift report; the exit code:
    1 when any day was flagged."""
    from pipeline.finance.invoice_reconcile import InvoiceError, compare, metered, parse_invoice
    from pipeline.finance.invoice_reconcile import tokenizer_drift as drift_report

    try:
        invoiced = parse_invoice(invoice.read_text())
    except InvoiceError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    days = [d for d, _, _ in invoiced]
    with db.engine(database_url()).connect() as conn:
        mine = metered(conn, days)
        drift = drift_report(conn, min(days), max(days)) if days else []
    mine = {k: v for k, v in mine.items() if (k[1], k[2]) in {(p, m) for _, p, m in invoiced}}
    rows = compare(mine, invoiced, threshold)
    flagged = [r for r in rows if r.flagged]
    drifts = ("input drift", "output drift", "cost drift")
    table = titled_table(
        f"Invoice {invoice.name} against metered usage (threshold {threshold:.1%})",
        "day",
        "provider",
        "model",
        *drifts,
        "flag",
        numbers=drifts,
    )
    for r in rows:
        table.add_row(
            f"{r.day}", r.provider, r.model,
            *(_pct(d) for d in (r.input_drift, r.output_drift, r.cost_drift)),
            f"[red]{r.why}[/]" if r.flagged else "",
        )  # fmt: skip
    console.print(table)
    numbers = ("attempts with a local count", "billed input tokens", "drift")
    report = titled_table(
        "Tokenizer drift: |local - billed input tokens| / billed, per model",
        "model",
        *numbers,
        numbers=numbers,
    )
    for d in drift:
        report.add_row(
            d.model,
            f"{d.attempts:,}",
            f"{d.billed_tokens:,}",
            f"{d.drift:.2%}" if d.drift is not None else "-",
        )
    console.print(report)
    models = sorted({(r.provider, r.model) for r in flagged})
    print(f"reconcile: {len(flagged)} of {len(rows)} days flagged; models: "
          + (", ".join(f"{p}/{m}" for p, m in models) or "none"))  # fmt: skip
    return 1 if flagged else 0
