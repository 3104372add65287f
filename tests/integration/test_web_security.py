"""The pages' defences, on the real app and database: headers on every
answer, a login cookie that holds a server-side session (never the token),
CSRF on the login form, tokens that expire, sessions that end with their
token or a logout, and the API docs behind a token."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from pipeline.web import access
from pipeline.web.app import create_app
from pipeline.web.security import WebConfig
from tests.integration.conftest import Env, make_partitions

pytestmark = pytest.mark.integration

# Plain HTTP in-process: a Secure cookie would not come back, so the flows
# run with insecure cookies and the Secure flag is checked on its own.
DEV = WebConfig(insecure_cookies=True)


def _app(env: Env, config: WebConfig = DEV) -> TestClient:
    # Secure cookies come back over HTTPS only.
    base = "http://testserver" if config.insecure_cookies else "https://testserver"
    make_partitions(env.database_url, date(2026, 9, 1))  # as the sink would
    env.query(
        "INSERT INTO spend_window (window_start, tenant, route, feature, provider, model,"
        " attempts, requests) VALUES ('2026-09-01T10:00Z', 'acme', '/r', 'f', 'p', 'm', 1, 1)"
        " ON CONFLICT DO NOTHING RETURNING 1"
    )
    return TestClient(create_app(env.database_url, config), base_url=base, follow_redirects=False)


def _login(client: TestClient, token: str, origin: str | None = None) -> object:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    headers = {"Origin": origin} if origin else {}
    return client.post(
        "/login", data={"token": token, "csrf": csrf.group(1), "next": "/"}, headers=headers
    )


def test_every_answer_carries_the_security_headers(env: Env, engine: Engine) -> None:
    _, token = access.create_token(engine, "acme")
    with _app(env) as client:
        for answer in (
            client.get("/login"),
            client.get("/tenants/acme", headers={"Authorization": f"Bearer {token}"}),
            client.get("/api/tenants", headers={"Authorization": f"Bearer {token}"}),
        ):
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert answer.headers["cache-control"] == "no-store"


def test_the_login_cookie_is_a_server_side_session(env: Env, engine: Engine) -> None:
    _, token = access.create_token(engine, "acme")
    with _app(env, WebConfig()) as client:  # the default: Secure cookies
        done = _login(client, token)
        assert done.status_code == 303  # type: ignore[attr-defined]
        cookie = done.headers["set-cookie"]  # type: ignore[attr-defined]
        assert cookie.startswith("finops_session=")
        assert all(flag in cookie for flag in ("HttpOnly", "SameSite=strict", "Secure"))
        assert token not in cookie
        session = cookie.split(";")[0].split("=", 1)[1]
    ((stored,),) = env.query("SELECT session_sha256 FROM web_session")
    assert stored == access.digest(session) != session

    with _app(env) as client:
        _login(client, token)
        assert client.get("/tenants/acme").status_code == 200
        kept = client.cookies["finops_session"]
        client.get("/logout")
        # The session ended on the server: a copy of the cookie reads nothing.
        client.cookies.set("finops_session", kept)
        assert client.get("/tenants/acme").status_code == 303


def test_a_cross_site_login_is_refused(env: Env, engine: Engine) -> None:
    _, token = access.create_token(engine, "acme")
    with _app(env) as client:
        # Another site's form: no CSRF cookie comes with it (SameSite=Strict).
        forged = client.post("/login", data={"token": token, "csrf": "guess", "next": "/"})
        assert forged.status_code == 403 and "finops_session" not in forged.headers.get(
            "set-cookie", ""
        )
        elsewhere = _login(client, token, origin="https://evil.example")
        assert elsewhere.status_code == 403  # type: ignore[attr-defined]
        assert _login(client, token, origin="http://testserver").status_code == 303  # type: ignore[attr-defined]


def test_tokens_expire_and_revoking_one_ends_its_sessions(env: Env) -> None:
    created = env.finops("tokens", "create", "--tenant", "acme", "--expires", "30d")
    token = created.stdout.strip().splitlines()[-1]
    ((expires,),) = env.query("SELECT expires_at FROM api_token")
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)  # type: ignore[operator]
    assert (
        env.finops("tokens", "create", "--admin", "--expires", "soon", check=False).returncode == 2
    )
    bearer = {"Authorization": f"Bearer {token}"}
    with _app(env) as client:
        assert client.get("/api/tenants", headers=bearer).status_code == 200
        _login(client, token)
        assert client.get("/tenants/acme").status_code == 200
        env.query("UPDATE api_token SET expires_at = now() - interval '1 second' RETURNING 1")
        assert client.get("/api/tenants", headers=bearer).status_code == 401
        assert client.get("/tenants/acme").status_code == 303  # its session is over too
        env.query("UPDATE api_token SET expires_at = NULL, revoked_at = now() RETURNING 1")
        assert client.get("/api/tenants", headers=bearer).status_code == 401


def test_the_api_docs_need_a_token_unless_configured_public(env: Env, engine: Engine) -> None:
    _, token = access.create_token(engine, None)
    with _app(env) as client:
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/docs").status_code == 303  # a page: to the login form
        for path in ("/docs", "/openapi.json"):
            assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with _app(env, WebConfig(insecure_cookies=True, public_docs=True)) as client:
        assert client.get("/openapi.json").status_code == 200
        assert "openapi" in client.get("/openapi.json").json()
