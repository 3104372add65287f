"""The tenant anomaly pages and their JSON API, served by a real ``finops
serve`` over a database that a real worker filled during a runaway-agent
incident: the page in a real browser, tenant isolation by token and by
row-level security, and the OpenAPI spec fuzzed by schemathesis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from pipeline.web import access
from tests.integration.browser import chromium
from tests.integration.conftest import Env, Stack, new_env
from tests.integration.pages_server import running_pages
from tests.integration.test_alerts import _run

pytestmark = pytest.mark.integration

TENANT = "acme"  # the runaway agent's tenant
OTHER = "globex"


@dataclass(frozen=True)
class Site:
    env: Env
    url: str
    admin: str
    tenant: str  # TENANT's token
    other: str  # OTHER's token
    log: Path  # the server's output, shown when a test fails

    def output(self) -> str:
        return self.log.read_text()[-5000:]


def _token(env: Env, *args: str) -> str:
    return env.finops("tokens", "create", *args).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    env = new_env(stack, tmp_path_factory.mktemp("pages"))
    _run(env, "runaway-agent", side=True)
    admin, tenant, other = (
        _token(env, "--admin"),
        _token(env, "--tenant", TENANT),
        _token(env, "--tenant", OTHER),
    )
    log = env.home / "serve.log"
    # Plain HTTP on 127.0.0.1: a Secure cookie would never come back.
    with running_pages(env, log, FINOPS_WEB_INSECURE_COOKIES="true") as url:
        yield Site(env, url, admin, tenant, other, log)


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_tenant_page_renders_in_a_real_browser(site: Site, tmp_path: Path) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        # Logging in through the form, as a person would.
        page.goto(f"{site.url}/tenants/{TENANT}")
        assert "/login" in page.url
        page.fill("input[name=token]", site.tenant)
        page.click("button[type=submit]")
        page.wait_for_url(f"{site.url}/tenants/{TENANT}")
        assert page.locator("#tenant").count() == 1, site.output()
        assert page.locator("#tenant").inner_text() == TENANT
        # The chart is drawn, with a marker where the alert fired.
        chart = page.locator("#spend svg")
        assert chart.count() == 1 and chart.bounding_box()["height"] > 100  # type: ignore[index]
        assert page.locator("#spend svg [id^=alert-marker-]").count() >= 1
        assert page.locator("#spend svg rect, #spend svg path").count() > 10
        # The alert's explanation with its numbers and top contributor.
        alert = page.locator("#alerts .alert[data-rule=runaway_request]")
        assert alert.count() == 1
        text = alert.inner_text()
        assert "runaway-agent-0001" in text and "$" in text
        assert page.locator("#by-route tr").count() > 1
        assert page.locator("#energy tr").count() > 1 or page.locator("#retries tr").count() > 1
        shot = tmp_path / "tenant-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        # Another tenant's page is not there for this tenant.
        answer = page.goto(f"{site.url}/tenants/{OTHER}")
        assert answer is not None and answer.status == 404


def test_a_tenant_token_reads_only_its_own_tenant(site: Site) -> None:
    status, body = _get(f"{site.url}/api/tenants/{TENANT}", site.tenant)
    assert status == 200
    mine = json.loads(body)
    assert mine["tenant"] == TENANT and mine["totals"]["requests"] > 0
    assert any(a["rule"] == "runaway_request" for a in mine["alerts"])
    assert isinstance(mine["totals"]["cost_usd"], str)  # money as exact decimal text

    for path in (f"/api/tenants/{TENANT}", f"/tenants/{TENANT}"):
        assert _get(site.url + path, site.other)[0] == 404
    assert json.loads(_get(f"{site.url}/api/tenants", site.other)[1]) == [OTHER]
    others_alerts = json.loads(_get(f"{site.url}/api/alerts?status=all", site.other)[1])
    assert all(a["tenant"] == OTHER for a in others_alerts)
    assert TENANT not in _get(f"{site.url}/api/alerts?status=all", site.other)[1].decode()

    # Admin reads every tenant; no token or a revoked one reads nothing.
    assert len(json.loads(_get(f"{site.url}/api/tenants", site.admin)[1])) > 2
    assert _get(f"{site.url}/api/tenants/{OTHER}", site.admin)[0] == 200
    assert _get(f"{site.url}/api/tenants/{TENANT}")[0] == 401
    assert _get(f"{site.url}/tenants/{TENANT}")[0] == 303  # to the login form
    assert _get(f"{site.url}/api/tenants/{TENANT}", "fo_not-a-token")[0] == 401
    revoked = _token(site.env, "--tenant", TENANT)
    assert _get(f"{site.url}/api/tenants", revoked)[0] == 200
    ((token_id,),) = site.env.query(
        "SELECT id FROM api_token WHERE token_sha256 = %s", (access.digest(revoked),)
    )
    site.env.finops("tokens", "revoke", str(token_id))
    assert _get(f"{site.url}/api/tenants", revoked)[0] == 401
    # Only hashes are stored.
    stored = {h for (h,) in site.env.query("SELECT token_sha256 FROM api_token")}
    assert site.tenant not in stored and access.digest(site.tenant) in stored


TENANT_TABLES = {
    "spend_window": "tenant",
    "energy_window": "tenant",
    "cache_window": "tenant",
    "request_cost": "tenant",
    "alert": "tenant",
    "unpriced_event": "tenant",
}


def test_row_level_security_under_the_tenant_role(site: Site) -> None:
    """Straight SQL, no Python in between: under a tenant's role every tenant
    table shows that tenant's rows only, and the token table not at all."""
    with psycopg.connect(site.env.database_url) as conn:
        everyone = {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM spend_window")}
        assert {TENANT, OTHER} < everyone
        conn.execute(f"SET ROLE {access.role_name(TENANT)}")
        for table, column in TENANT_TABLES.items():
            seen = {t for (t,) in conn.execute(f"SELECT DISTINCT {column} FROM {table}")}
            assert seen <= {TENANT}, (table, seen)
        assert {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM spend_window")} == {TENANT}
        assert "runaway_request" in {r for (r,) in conn.execute("SELECT rule FROM alert")}
        evictions = conn.execute(
            "SELECT count(*) FROM cache_eviction_window"
            " WHERE evicted_tenant <> %s AND evicting_tenant <> %s",
            (TENANT, TENANT),
        ).fetchone()
        assert evictions == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM api_token")
        conn.rollback()
        conn.execute(f"SET ROLE {access.role_name(OTHER)}")
        assert {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM spend_window")} == {OTHER}


def test_the_api_matches_its_openapi_spec(site: Site) -> None:
    """Requests generated from the spec, as admin and as a tenant: never a
    server error, and every answer matches the spec. (schemathesis' own pytest
    plugin does not run on this pytest, so the operations are driven here.)"""
    assert _get(f"{site.url}/openapi.json")[0] == 401  # the spec is behind a token too
    schema = schemathesis.openapi.from_url(
        f"{site.url}/openapi.json", headers={"Authorization": f"Bearer {site.admin}"}
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /api/tenants",
        "GET /api/tenants/{tenant}",
        "GET /api/alerts",
    }
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def answers_within_the_spec(case: schemathesis.Case) -> None:
            for token in (site.admin, site.tenant):
                case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

        answers_within_the_spec()
