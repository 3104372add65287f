"""``finops serve`` and ``finops tokens``: the pages and who may read them."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from pipeline.cli.common import console, database_url, titled_table, when
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.web import access

tokens_app = typer.Typer(
    help="API tokens for finops serve (stored hashed; a tenant token reads one tenant).",
    no_args_is_help=True,
)


@tokens_app.command("create")
def tokens_create(
    tenant: Annotated[str | None, typer.Option(help="the tenant this token may read")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="a token that reads every tenant")] = False,
    label: Annotated[str, typer.Option(help="a note: who or what holds it")] = "",
    expires: Annotated[
        str | None, typer.Option(help="valid for this long: 12h, 30d, 2w (default: until revoked)")
    ] = None,
) -> None:
    """Create a token and print it once; only its SHA-256 is stored."""
    if (tenant is None) == (not admin):
        console.print("[red]give exactly one of --tenant T or --admin[/]")
        raise typer.Exit(2)
    lasts = _duration(expires) if expires else None
    url = database_url()
    db.upgrade(url)
    token_id, secret = access.create_token(db.engine(url), tenant, label, lasts)
    who = f"tenant {tenant}" if tenant else "admin"
    console.print(f"token {token_id} ({who}); shown once, keep it secret:", style="bold")
    # Plain print: no wrapping or markup, so it can be piped into a secret store.
    print(secret)


_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
          "w": timedelta(weeks=1)}  # fmt: skip


def _duration(value: str) -> timedelta:
    number, unit = value[:-1], value[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise typer.BadParameter("a whole number and m, h, d or w, as 30d", param_hint="--expires")
    return int(number) * _UNITS[unit]


@tokens_app.command("list")
def tokens_list() -> None:
    """Tokens (never their secrets): who they are for and when last used."""
    table = titled_table(
        "API tokens", "id", "tenant", "label", "created", "last used", "revoked", "expires",
        numbers={"id"},
    )  # fmt: skip

    for t in access.list_tokens(db.engine(database_url())):
        table.add_row(
            str(t.id),
            t.tenant or "[bold]admin[/]",
            t.label,
            when(t.created_at),
            when(t.last_used_at),
            when(t.revoked_at),
            when(t.expires_at),
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token: it stops working at once."""
    if not access.revoke_token(db.engine(database_url()), token_id):
        console.print(f"[red]no live token {token_id}[/]")
        raise typer.Exit(1)
    console.print(f"token {token_id} revoked")


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Serve the tenant anomaly pages (/tenants/T, /alerts) and the JSON API (/docs)."""
    from pipeline.stream import live_metrics
    from pipeline.web.app import serve as run
    from pipeline.web.security import WebConfig

    url = database_url()
    db.upgrade(url)
    console.print(
        f"finops pages on http://{host}:{port}/  (log in with a token from `finops tokens create`)"
    )
    settings = Settings()
    config = WebConfig(
        insecure_cookies=settings.web_insecure_cookies,
        public_docs=settings.web_public_docs,
        session_hours=settings.web_session_hours,
    )
    if config.insecure_cookies:
        console.print("[yellow]FINOPS_WEB_INSECURE_COOKIES: session cookies over plain HTTP[/]")
    live_metrics.serve(settings.metrics_port, settings.metrics_host)
    run(url, host, port, config)
