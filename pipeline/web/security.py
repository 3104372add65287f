"""What every answer of the pages carries, and how the login form is kept
from being posted by another site.

- Headers: a Content-Security-Policy that runs no inline or foreign script
  (the pages have none: charts are inline SVG drawn on the server) and lets
  no other site frame them; ``nosniff``; no referrer; and ``no-store``, so
  tenant data never sits in a shared cache. Only the interactive API docs,
  FastAPI's Swagger UI, need its own script: that one page allows it.
- Cookies: the session cookie is HttpOnly, SameSite=Strict and Secure (a
  browser sends it over HTTPS only) unless ``FINOPS_WEB_INSECURE_COOKIES``
  allows plain HTTP for development.
- CSRF: a form POST must carry the value of a ``finops_csrf`` cookie set
  with the form (double submit; the cookie is SameSite=Strict, so another
  site's form cannot send it), and an ``Origin`` header, when the browser
  names one, must be this server's own.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from fastapi import Request, Response

CSRF_COOKIE: Final = "finops_csrf"
SESSION_COOKIE: Final = "finops_session"
_PAGES_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
# FastAPI's Swagger UI: its bundle from jsdelivr and one inline start-up script.
_DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net;"
    " style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net;"
    " img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; base-uri 'none';"
    " frame-ancestors 'none'"
)


@dataclass(frozen=True)
class WebConfig:
    insecure_cookies: bool = False  # FINOPS_WEB_INSECURE_COOKIES: plain-HTTP development
    public_docs: bool = False  # FINOPS_WEB_PUBLIC_DOCS: /docs and /openapi.json without a token
    session_hours: float = 12.0


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    docs = request.url.path == "/docs"
    response.headers["Content-Security-Policy"] = _DOCS_CSP if docs else _PAGES_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def set_cookie(response: Response, config: WebConfig, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=not config.insecure_cookies,
        path="/",
    )


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(request: Request, submitted: str) -> bool:
    """The form's token matches its cookie, and the form came from here."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    origin = request.headers.get("origin")
    # Under Referrer-Policy: no-referrer a browser sends "null" for its own
    # forms too; the cookie, which no other site can send, still decides.
    if origin not in (None, "null") and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    return bool(cookie) and secrets.compare_digest(cookie, submitted)
