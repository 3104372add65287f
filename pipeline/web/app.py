"""``finops serve``: tenant anomaly pages for on-call, and the same data as a
JSON API (OpenAPI at /openapi.json, browsable at /docs).

Every request carries an API token (``Authorization: Bearer``, or the cookie
the login form sets). A tenant's token reads its own tenant only: the check
here answers 404 for any other tenant, and underneath it every query runs
under the tenant's PostgreSQL role, where row-level security hides the other
tenants' rows anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import AfterValidator
from sqlalchemy import Connection

from pipeline.storage import db
from pipeline.web import access
from reports import charts
from reports import tenant_view as tv
from reports.render import render

COOKIE = "finops_token"
MAX_HOURS = 24 * 92


def _utc(ts: datetime | None) -> datetime | None:
    """A time without a zone is UTC."""
    return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=UTC)


def _start(end: datetime, hours: int) -> datetime:
    """``hours`` before ``end``, or the earliest time there is."""
    earliest = datetime.min.replace(tzinfo=UTC)
    return end - timedelta(hours=hours) if end - earliest > timedelta(hours=hours) else earliest


TenantName = Annotated[
    str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="tenant")
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
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
    found = access.authenticate(request.app.state.engine, token) if token else None
    if found is None:
        raise Unauthenticated()
    return found


Who = Annotated[access.Principal, Depends(principal)]


def create_app(database_url: str) -> FastAPI:
    engine = db.engine(database_url)
    app = FastAPI(
        title="finops",
        summary="Spend, cache, retry and energy windows per tenant, and the alerts on them.",
        version="1",
        responses={401: {"description": "no valid API token"}},
    )
    app.state.engine = engine

    @app.exception_handler(Unauthenticated)
    def unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        if request.url.path.startswith("/api/"):
            return Response(
                '{"detail":"a valid API token is required"}',
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @contextmanager
    def reading(who: access.Principal) -> Iterator[Connection]:
        with engine.begin() as conn:
            access.read_as(conn, who)
            yield conn

    def view(
        who: access.Principal, tenant: str, hours: int, until: datetime | None
    ) -> tv.TenantView:
        if not who.may_read(tenant):
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
        who: Who, tenant: TenantName, hours: Hours = 24, until: Until = None
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
            return RedirectResponse(f"/tenants/{who.tenant}", status_code=303)
        with reading(who) as conn:
            return HTMLResponse(render("index.html.j2", tenants=tv.tenants(conn)))

    @app.get("/tenants/{tenant}", response_class=HTMLResponse, include_in_schema=False)
    def tenant_page(
        who: Who, tenant: TenantName, hours: Hours = 24, until: Until = None
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

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(next: str = "/") -> HTMLResponse:
        return HTMLResponse(render("login.html.j2", next=_local(next), error=None))

    @app.post("/login", include_in_schema=False)
    def login(token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
        if access.authenticate(engine, token) is None:
            page = render("login.html.j2", next=_local(next), error="That token is not valid.")
            return HTMLResponse(page, status_code=401)
        done = RedirectResponse(_local(next), status_code=303)
        done.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=12 * 3600)
        return done

    @app.get("/logout", include_in_schema=False)
    def logout() -> Response:
        done = RedirectResponse("/login", status_code=303)
        done.delete_cookie(COOKIE)
        return done

    return app


def _local(target: str) -> str:
    """Only paths on this server: a login link must not redirect elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def serve(database_url: str, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(database_url), host=host, port=port, log_level="info")
