"""``finops serve``: tenant anomaly pages for on-call, and the same data as a
JSON API (OpenAPI at /openapi.json, browsable at /docs; both need a token
unless ``FINOPS_WEB_PUBLIC_DOCS``).

Every request carries an API token (``Authorization: Bearer``) or the
session cookie logging in with one sets. A tenant's token reads its own
tenant only: the check here answers 404 for any other tenant, and underneath
it every query runs under the tenant's PostgreSQL role, where row-level
security hides the other tenants' rows anyway. Pages are served under a
tenant's URL key (``reports.names.url_key``), so any name is reachable.
Headers, cookies and CSRF: :mod:`pipeline.web.security`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator
from sqlalchemy import Connection

from pipeline.storage import db
from pipeline.stream import live_metrics
from pipeline.web import access
from pipeline.web.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    WebConfig,
    csrf_ok,
    new_csrf,
    security_headers,
    set_cookie,
)
from reports import charts
from reports import tenant_view as tv
from reports.names import from_url_key, url_key
from reports.render import render

REQUESTS = live_metrics.RequestMetrics("finops_web", "route")
MAX_HOURS = 24 * 92


def _utc(ts: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=UTC)


def _start(end: datetime, hours: int) -> datetime:
    """``hours`` before ``end``, or the earliest time there is."""
    earliest = datetime.min.replace(tzinfo=UTC)
    return end - timedelta(hours=hours) if end - earliest > timedelta(hours=hours) else earliest


TenantKey = Annotated[
    str,
    Path(
        min_length=1,
        max_length=1400,  # a 256-character name, 4 bytes each, in base64url
        pattern=r"^(?:~[A-Za-z0-9_-]+|[A-Za-z0-9_.-]{1,64})$",
        description="the tenant's URL key: the name itself when it is plain (letters,"
        " digits, _ . -), else ~ and its UTF-8 in unpadded base64url",
    ),
]
Hours = Annotated[int, Query(ge=1, le=MAX_HOURS, description="length of the range")]
Until = Annotated[
    datetime | None,
    AfterValidator(_utc),
    Query(description="end of the range (default: the tenant's latest window)"),
]


class Unauthenticated(Exception):
    pass


def principal(request: Request) -> access.Principal:
    engine = request.app.state.engine
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        found = access.authenticate(engine, header[7:])
    else:
        session = request.cookies.get(SESSION_COOKIE)
        found = access.session_principal(engine, session) if session else None
    if found is None:
        raise Unauthenticated()
    return found


Who = Annotated[access.Principal, Depends(principal)]


def create_app(database_url: str, config: WebConfig | None = None) -> FastAPI:
    config = config or WebConfig()
    engine = db.engine(database_url)
    public = config.public_docs

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()  # the pool's connections close now, not in finalizers

    app = FastAPI(
        lifespan=lifespan,
        title="finops",
        summary="Spend, cache, retry and energy windows per tenant, and the alerts on them.",
        version="1",
        responses={401: {"description": "no valid API token"}},
        docs_url="/docs" if public else None,
        redoc_url=None,
        openapi_url="/openapi.json" if public else None,
    )
    app.state.engine = engine
    app.middleware("http")(security_headers)
    app.middleware("http")(REQUESTS)

    @app.exception_handler(Unauthenticated)
    def unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            return Response(
                '{"detail":"a valid API token is required"}',
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(here, safe='/')}", status_code=303)

    @contextmanager
    def reading(who: access.Principal) -> Iterator[Connection]:
        with engine.begin() as conn:
            access.read_as(conn, who)
            yield conn

    def view(who: access.Principal, key: str, hours: int, until: datetime | None) -> tv.TenantView:
        tenant = from_url_key(key)
        if tenant is None or not who.may_read(tenant):
            raise HTTPException(404, "no such tenant")
        with reading(who) as conn:
            found = tv.extent(conn, tenant)
            if found is None:
                raise HTTPException(404, "no such tenant")
            first, last = found
            end = until or last + timedelta(minutes=1)
            # No empty stretch before the tenant's first window: the chart
            # keeps its detail for a tenant that is new.
            start = max(_start(end, hours), min(first, end))
            return tv.tenant_view(conn, tenant, start, end)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/tenants", response_model=list[str], summary="Tenants this token may read")
    def api_tenants(who: Who) -> list[str]:
        with reading(who) as conn:
            return tv.tenants(conn)

    @app.get(
        "/api/tenants/{tenant}",
        response_model=tv.TenantView,
        summary="A tenant's windows",
        responses={404: {"description": "no such tenant, or not this token's"}},
    )
    def api_tenant(
        who: Who, tenant: TenantKey, hours: Hours = 24, until: Until = None
    ) -> tv.TenantView:
        return view(who, tenant, hours, until)

    @app.get("/api/alerts", response_model=list[tv.AlertView], summary="Alerts, newest first")
    def api_alerts(
        who: Who,
        status: Literal["firing", "all"] = "firing",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[tv.AlertView]:
        with reading(who) as conn:
            return tv.alerts(conn, firing_only=status == "firing", limit=limit)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(who: Who) -> Response:
        if who.tenant is not None:
            return RedirectResponse(f"/tenants/{url_key(who.tenant)}", status_code=303)
        with reading(who) as conn:
            return HTMLResponse(render("index.html.j2", tenants=tv.tenants(conn)))

    @app.get("/tenants/{tenant}", response_class=HTMLResponse, include_in_schema=False)
    def tenant_page(
        who: Who, tenant: TenantKey, hours: Hours = 24, until: Until = None
    ) -> HTMLResponse:
        v = view(who, tenant, hours, until)
        return HTMLResponse(
            render(
                "tenant.html.j2",
                v=v,
                hours=hours,
                spend_chart=charts.spend_svg(v.spend, v.alerts, v.bucket_minutes),
                cache_chart=charts.hit_rate_svg(v.cache_series),
            )
        )

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts_page(who: Who, status: Literal["firing", "all"] = "firing") -> HTMLResponse:
        with reading(who) as conn:
            found = tv.alerts(conn, firing_only=status == "firing")
        return HTMLResponse(render("alerts.html.j2", alerts=found, firing_only=status == "firing"))

    if not public:

        @app.get("/openapi.json", include_in_schema=False)
        def openapi(who: Who) -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False)
        def docs(who: Who) -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="finops API")

    def login_page(next: str, error: str | None, status: int = 200) -> HTMLResponse:
        csrf = new_csrf()
        page = HTMLResponse(
            render("login.html.j2", next=_local(next), error=error, csrf=csrf),
            status_code=status,
        )
        set_cookie(page, config, CSRF_COOKIE, csrf, max_age=3600)
        return page

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(next: str = "/") -> HTMLResponse:
        return login_page(next, None)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        token: Annotated[str, Form()],
        csrf: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        if not csrf_ok(request, csrf):
            return login_page(next, "That form has expired: log in again.", status=403)
        who = access.authenticate(engine, token)
        if who is None:
            return login_page(next, "That token is not valid.", status=401)
        lasts = timedelta(hours=config.session_hours)
        session = access.open_session(engine, who, lasts)
        done = RedirectResponse(_local(next), status_code=303)
        set_cookie(done, config, SESSION_COOKIE, session, max_age=int(lasts.total_seconds()))
        done.delete_cookie(CSRF_COOKIE, path="/")
        return done

    @app.get("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            access.close_session(engine, session)
        done = RedirectResponse("/login", status_code=303)
        done.delete_cookie(SESSION_COOKIE, path="/")
        return done

    return app


def _local(target: str) -> str:
    """Only paths on this server: a login link must not redirect elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def serve(database_url: str, host: str, port: int, config: WebConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(database_url, config), host=host, port=port, log_level="info")
