"""Month close through the real pipeline: the worked example to the cent,
late usage as an adjustment in the next month while the closed month's
documents stay byte-identical, the PDF read back with poppler, FOCUS and
sustainability exports, and reconciliation against a provider invoice."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pytest

from reports import focus
from reports.names import file_slug
from tests.factories import event, line
from tests.integration.browser import chromium
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

NO_SHARED = "allocation: proportional\nshared_costs: []\n"
# The packaged default charges no shared cost; the example policy does.
EXAMPLE_POLICY = "models/data/examples/chargeback.yaml"
ACME_PDF = f"chargeback-2026-09-{file_slug('acme')}.pdf"


def _publish(env: Env, path: Path, events: list[dict[str, object]]) -> None:
    path.write_bytes(b"\n".join(line(e) for e in events) + b"\n")
    env.finops("replay", str(path), "--per-message", "500")


def _month_of_calls(start: date, cached: bool) -> list[dict[str, object]]:
    """30 days x 10,000 calls of 4,000 input + 500 output tokens."""
    t0 = datetime(start.year, start.month, 1, tzinfo=UTC)
    out = []
    for i in range(30 * 10_000):
        ts = t0 + timedelta(seconds=i * 8.64)
        out.append(
            event(
                event_id=f"{start:%Y%m}-{i}",
                request_id=f"{start:%Y%m}-{i}",
                ts=ts.isoformat().replace("+00:00", "Z"),
                cache_read_tokens=3000 if cached else 0,
            )
        )
    return out


def test_the_worked_example_closes_to_the_cent(env: Env, tmp_path: Path) -> None:
    env.load_default_prices()
    _publish(env, tmp_path / "nov.jsonl", _month_of_calls(date(2025, 11, 1), cached=False))
    _publish(env, tmp_path / "apr.jsonl", _month_of_calls(date(2026, 4, 1), cached=True))
    env.finops("worker", "--drain")
    policy = tmp_path / "policy.yaml"
    policy.write_text(NO_SHARED)
    out = tmp_path / "out"
    for month, total in (("2025-11", "$5,850.00"), ("2026-04", "$3,420.00")):
        said = env.finops("month", "close", month, "--policy", str(policy), "--out", str(out))
        assert f"total {total}" in said.stdout, said.stdout
        ledger = (out / month / f"ledger-{month}.csv").read_text()
        rows = list(csv.DictReader(io.StringIO(ledger)))
        assert sum(Decimal(r["amount_usd"]) for r in rows) == Decimal(total[1:].replace(",", ""))
        summary = (out / month / f"finance-summary-{month}.html").read_text()
        assert total in summary
    ((stored,),) = env.query("SELECT total FROM month_close WHERE month = '2025-11-01'")
    assert stored == Decimal("5850.00")


def _simulated_month(env: Env, start: datetime) -> None:
    env.load_default_prices()
    env.finops("carbon", "load")
    env.finops(
        "simulate", "--rate", "4", "--duration", "1800", "--start", start.isoformat(), "--side"
    )
    env.finops("worker", "--drain")


def test_close_adjust_export_and_reconcile(env: Env, tmp_path: Path) -> None:
    start = datetime(2026, 9, 14, 9, 0, tzinfo=UTC)
    _simulated_month(env, start)
    out = tmp_path / "out"
    env.finops("month", "close", "2026-09", "--policy", EXAMPLE_POLICY, "--out", str(out))
    first = {p.name: p.read_bytes() for p in (out / "2026-09").iterdir()}
    assert ACME_PDF in first and "ledger-2026-09.csv" in first

    # The lines add up to each document's total, shared costs included.
    ledger = list(csv.DictReader(io.StringIO(first["ledger-2026-09.csv"].decode())))
    kinds = {r["kind"] for r in ledger}
    assert {"usage", "retries", "shared"} <= kinds
    ((total,),) = env.query("SELECT total FROM month_close")
    assert sum(Decimal(r["amount_usd"]) for r in ledger) == total

    # A closed month never changes: the database refuses, closing again and
    # re-exporting give the same bytes.
    with (
        psycopg.connect(env.database_url) as conn,
        pytest.raises(psycopg.errors.IntegrityConstraintViolation),
    ):
        conn.execute("UPDATE invoice_line SET amount = 0")
    again = env.finops(
        "month", "close", "2026-09", "--policy", EXAMPLE_POLICY, "--out", str(tmp_path / "again")
    )
    assert "was already closed" in again.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "again" / "2026-09").iterdir()} == first

    # A late event for September arrives after the close: an adjustment in
    # October, referencing September; September's documents are unchanged.
    late = event(event_id="late-1", ts="2026-09-20T12:00:00Z", tenant="acme",
                 route="/v1/chat", feature="support-bot")  # fmt: skip
    _publish(env, tmp_path / "late.jsonl", [late])
    env.finops("worker", "--drain")
    env.finops("month", "close", "2026-10", "--out", str(out))
    october = list(
        csv.DictReader(io.StringIO((out / "2026-10" / "ledger-2026-10.csv").read_text()))
    )
    (adjustment,) = [r for r in october if r["kind"] == "adjustment"]
    assert adjustment["tenant"] == "acme" and adjustment["adjusts"] == "2026-09"
    assert Decimal(adjustment["amount_usd"]) == Decimal("0.02")  # 4000 x $3 + 500 x $15 per Mtok
    env.finops("report", "chargeback", "--month", "2026-09", "--format", "pdf",
               "--out", str(tmp_path / "after"))  # fmt: skip
    after = (tmp_path / "after" / "2026-09" / ACME_PDF).read_bytes()
    assert after == first[ACME_PDF]

    _check_pdf(tmp_path, first[ACME_PDF], ledger)
    _check_html_in_browser(out / "2026-09", ledger)
    _check_focus(env, tmp_path)
    _check_sustainability(env, tmp_path)
    _check_reconcile(env, tmp_path)


def _check_pdf(tmp_path: Path, pdf: bytes, ledger: list[dict[str, str]]) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.fail("poppler-utils is missing: .ci/run installs it (tests/install-tools.sh)")
    path = tmp_path / "acme.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(path),
                    str(tmp_path / "page")], check=True)  # fmt: skip
    (png,) = tmp_path.glob("page*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    words = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout
    acme = sum(Decimal(r["amount_usd"]) for r in ledger if r["tenant"] == "acme")
    assert "Chargeback: acme" in words and f"Total ${acme:,}" in words, words[:500]


def _check_html_in_browser(folder: Path, ledger: list[dict[str, str]]) -> None:
    acme = sum(Decimal(r["amount_usd"]) for r in ledger if r["tenant"] == "acme")
    grand = sum(Decimal(r["amount_usd"]) for r in ledger)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto((folder / f"chargeback-2026-09-{file_slug('acme')}.html").as_uri())
        assert page.locator("#total").inner_text() == f"${acme:,}"
        for chart in ("#chart-by-feature svg", "#chart-by-day svg"):
            box = page.locator(chart).bounding_box()
            assert box is not None and box["height"] > 80, chart
        assert page.locator("#lines tr").count() > 5
        assert page.locator("#top-routes tr").count() > 1
        page.screenshot(path=str(folder.parent / "chargeback-acme.png"), full_page=True)
        page.goto((folder / "finance-summary-2026-09.html").as_uri())
        assert page.locator("#grand-total").inner_text() == f"${grand:,}"
        assert page.locator("#forecast tr").count() > 3  # the mid-month forecast per tenant
        page.click("text=acme")  # the summary links each tenant's document
        assert page.locator("#tenant").inner_text() == "acme"


def _check_focus(env: Env, tmp_path: Path) -> None:
    env.finops("report", "focus", "--month", "2026-09", "--out", str(tmp_path / "focus"))
    df = pl.read_parquet(tmp_path / "focus" / "focus-2026-09.parquet")
    # The column set and types of FOCUS 1.2.
    assert list(df.columns) == list(focus.COLUMNS)
    assert dict(df.schema) == {c: pl.DataType.from_python(t) if isinstance(t, type) else t
                               for c, t in focus.COLUMNS.items()}  # fmt: skip
    csv_df = pl.read_csv(tmp_path / "focus" / "focus-2026-09.csv", infer_schema=False)
    assert csv_df.columns == df.columns and csv_df.height == df.height
    # The invariants the specification states.
    assert set(df["ChargeCategory"]) == {"Usage"}
    assert df["ChargeClass"].is_null().all()
    assert (df["ChargeFrequency"] == "Usage-Based").all()
    for c in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingAccountId",
              "BillingCurrency", "ProviderName", "PublisherName", "InvoiceIssuerName",
              "ServiceCategory", "ServiceName", "ChargePeriodStart", "ChargePeriodEnd",
              "BillingPeriodStart", "BillingPeriodEnd", "ConsumedQuantity", "ConsumedUnit",
              "PricingQuantity", "PricingUnit", "SkuId", "SkuPriceId"):  # fmt: skip
        assert df[c].null_count() == 0, c
    assert (df["ServiceCategory"] == "AI and Machine Learning").all()
    assert (df["BillingPeriodStart"] <= df["ChargePeriodStart"]).all()
    assert (df["ChargePeriodStart"] < df["ChargePeriodEnd"]).all()
    assert (df["ChargePeriodEnd"] <= df["BillingPeriodEnd"]).all()
    for row in df.iter_rows(named=True):
        assert row["ListCost"] == row["ListUnitPrice"] * row["PricingQuantity"]
        assert row["ContractedCost"] == row["ContractedUnitPrice"] * row["PricingQuantity"]
        assert row["EffectiveCost"] <= row["ListCost"] and row["BilledCost"] == row["EffectiveCost"]
        assert row["ConsumedQuantity"] == row["PricingQuantity"] * 1_000_000
        assert isinstance(json.loads(row["Tags"]), dict)
    # The usage rows are the month's metered cost as closed, exactly (the
    # late event is October's adjustment, not a change to September).
    ((billed,),) = env.query(
        "SELECT sum(effective_cost) FROM invoice_line WHERE month = '2026-09-01'"
        " AND kind IN ('usage', 'retries', 'failed')"
    )
    assert df["EffectiveCost"].sum() == billed


def _check_sustainability(env: Env, tmp_path: Path) -> None:
    env.finops("report", "sustainability", "--month", "2026-09", "--out", str(tmp_path / "s"))
    doc = json.loads((tmp_path / "s" / "sustainability-2026-09.json").read_text())
    sums = dict(
        env.query(
            "SELECT source, sum(energy_mj) FROM energy_window WHERE window_start >= '2026-09-01'"
            " AND window_start < '2026-10-01' GROUP BY source"
        )
    )
    assert doc["totals"]["measured"]["energy_mj"] == sums["measured"] > 0
    assert doc["totals"]["estimated"]["energy_mj"] == sums["estimated"] > 0
    ((idle,),) = env.query(
        "SELECT sum(idle_mj) FROM node_energy_window WHERE window_start >= '2026-09-01'"
        " AND window_start < '2026-10-01'"
    )
    assert doc["totals"]["idle"]["energy_mj"] == idle
    assert "SCI" in doc["method"]
    # Every breakdown adds up to the same measured energy, regions included.
    for dim in ("model", "tenant", "region"):
        rows = [r for r in doc["rows"] if r["dimension"] == dim and r["source"] == "measured"]
        assert sum(r["energy_mj"] for r in rows) == sums["measured"], dim
    assert {r["value"] for r in doc["rows"] if r["dimension"] == "region"} - {"unlocated"}
    html = (tmp_path / "s" / "sustainability-2026-09.html").read_text()
    assert "tokens-per-joule" in html and "Method" in html


def _check_reconcile(env: Env, tmp_path: Path) -> None:
    """An invoice that is the metered usage, but 11% more on one model."""
    rows = env.query(
        "SELECT (window_start AT TIME ZONE 'UTC')::date, provider, model, sum(input_tokens),"
        " sum(output_tokens), sum(cost_usd) FROM spend_window WHERE window_start >= '2026-09-01'"
        " AND window_start < '2026-10-01' AND unpriced_attempts = 0 GROUP BY 1, 2, 3"
    )
    invoice = tmp_path / "invoice.csv"
    with invoice.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "provider", "model", "input_tokens", "output_tokens", "cost_usd"])
        for day, provider, model, i, o, c in rows:
            k = Decimal("1.11") if model == "gpt-4o" else Decimal(1)
            w.writerow(
                [
                    day,
                    provider,
                    model,
                    int(i * k),
                    int(o * k),
                    (c * k).quantize(Decimal("0.000001")),
                ]
            )  # type: ignore[operator]
    said = env.finops("reconcile", "--invoice", str(invoice), check=False)
    assert said.returncode == 1, said.stdout + said.stderr
    assert "models: openai/gpt-4o\n" in said.stdout, said.stdout
    assert "+11.00%" in said.stdout
    assert "Tokenizer drift" in said.stdout
