"""Names from producers we did not write: tenants, routes and features that
read as markup, paths, formulas or are simply long go through the real
pipeline; the month closes and renders every document for every tenant,
nothing is written outside its output folder, the ledger's cells are
neutralised, and every tenant's page is reachable by its own token. A name
with a bidirectional override never gets in (bad_identifier)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from pipeline.web import access
from pipeline.web.app import create_app
from pipeline.web.security import WebConfig
from reports.names import file_slug, url_key
from tests.factories import event, line
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

HOSTILE = [
    "a<b",
    "../x",
    "team/a",
    "t" * 240,
    '=HYPERLINK("http://evil")',
    "@SUM(1+1)",
    "-2+3",
    "ünïcødé ☃ 東京",
    "..",
    "$x$ and $y",
    "ü" * 256,  # the longest name, its URL key 684 characters
]


def test_a_month_of_hostile_names_closes_renders_and_serves(
    env: Env, engine: Engine, tmp_path: Path
) -> None:
    events = [
        event(
            event_id=f"h{i}",
            tenant=name,
            route=f"/v1/{name}"[:256],
            feature=name,
            ts=f"2026-09-{1 + i:02d}T10:00:00Z",
        )
        for i, name in enumerate(HOSTILE)
    ]
    refused = line(event(event_id="bidi", tenant="ev\u202eil", ts="2026-09-20T10:00:00Z"))
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"\n".join([*(line(e) for e in events), refused]) + b"\n")
    env.load_default_prices()
    env.finops("replay", str(source))
    env.finops("worker", "--drain")
    assert env.query("SELECT split_part(reason, ':', 1) FROM dead_letter") == [("bad_identifier",)]

    out = tmp_path / "out"
    env.finops("month", "close", "2026-09", "--out", str(out))
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.parts[0] in ("out", "hostile.jsonl") for p in written), written
    folder = out / "2026-09"
    for name in HOSTILE:
        for fmt in ("html", "pdf"):
            document = folder / f"chargeback-2026-09-{file_slug(name)}.{fmt}"
            assert document.stat().st_size > 500, name
    # Markup in a name is text in the page, never markup.
    page = (folder / f"chargeback-2026-09-{file_slug('a<b')}.html").read_text()
    assert "a&lt;b" in page and "<b" not in page.replace("<body", "").replace("<br", "")

    ledger = list(csv.DictReader(io.StringIO((folder / "ledger-2026-09.csv").read_text())))
    tenants = {r["tenant"] for r in ledger}
    assert '\'=HYPERLINK("http://evil")' in tenants and "'@SUM(1+1)" in tenants
    assert "'-2+3" in tenants and "a<b" in tenants
    assert not any(v.startswith(("=", "+", "@")) for r in ledger for v in r.values())
    # The report command writes a hostile tenant's document alone, too.
    env.finops("report", "chargeback", "--month", "2026-09", "--format", "pdf",
               "--tenant", "../x", "--out", str(tmp_path / "again"))  # fmt: skip
    assert (tmp_path / "again" / "2026-09" / f"chargeback-2026-09-{file_slug('../x')}.pdf").exists()

    _, admin = access.create_token(engine, None)
    with TestClient(create_app(env.database_url, WebConfig())) as client:
        for name in HOSTILE:
            _, own = access.create_token(engine, name)
            for token in (own, admin):
                got = client.get(f"/api/tenants/{url_key(name)}", headers=_bearer(token))
                assert got.status_code == 200, (name, got.text)
                assert got.json()["tenant"] == name
            page = client.get(f"/tenants/{url_key(name)}", headers=_bearer(own))
            assert page.status_code == 200, name
        # Another tenant's key is not this token's to read.
        _, mine = access.create_token(engine, "team/a")
        assert (
            client.get(f"/api/tenants/{url_key('../x')}", headers=_bearer(mine)).status_code == 404
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
