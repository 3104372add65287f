"""``finops ingest``: the HTTP front door for real producers, and its keys."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import console, database_url, services, titled_table, when
from pipeline.storage import db

ingest_app = typer.Typer(
    help="The front door: LiteLLM, OpenTelemetry, CloudEvents and NDJSON over HTTP.",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="Ingest keys (stored hashed; a tenant-bound key publishes one tenant).",
    no_args_is_help=True,
)
ingest_app.add_typer(keys_app, name="keys")


@ingest_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8400,
) -> None:
    """Take usage from producers over HTTP and publish it to the usage topic
    (/v1/litellm, /v1/traces, /v1/events, /v1/usage; /healthz, /readyz)."""
    from pipeline.ingest import mapping
    from pipeline.ingest.server import serve as run

    settings, found = services()
    db.upgrade(found.database_url)
    rules = mapping.load(settings.ingest_mapping)
    source = settings.ingest_mapping or "the default mapping"
    console.print(f"finops ingest on http://{host}:{port}/  (identity from {source})")
    run(settings, found.kafka_url, db.engine(found.database_url), rules, host, port)


@keys_app.command("create")
def keys_create(
    source: Annotated[str, typer.Option(help="who sends with it: litellm-prod, otel-collector")],
    tenant: Annotated[
        str | None, typer.Option(help="the one tenant this key may publish (default: any)")
    ] = None,
) -> None:
    """Create a key and print it once; only its SHA-256 is stored."""
    from pipeline.ingest import keys

    url = database_url()
    db.upgrade(url)
    key_id, secret = keys.create_key(db.engine(url), source, tenant)
    who = f"tenant {tenant}" if tenant else "any tenant"
    console.print(
        f"ingest key {key_id} ({source}, {who}); shown once, keep it secret:", style="bold"
    )
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """Keys (never their secrets): their source, tenant and last use."""
    from pipeline.ingest import keys

    table = titled_table(
        "ingest keys", "id", "source", "tenant", "created", "last used", "revoked", numbers={"id"}
    )

    url = database_url()
    db.upgrade(url)
    for k in keys.list_keys(db.engine(url)):
        table.add_row(
            str(k.id),
            k.source,
            k.tenant or "[bold]any[/]",
            when(k.created_at),
            when(k.last_used_at),
            when(k.revoked_at),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key (a running door stops taking it within 5 seconds)."""
    from pipeline.ingest import keys

    if not keys.revoke_key(db.engine(database_url()), key_id):
        console.print(f"[red]no live ingest key {key_id}[/]")
        raise typer.Exit(1)
    console.print(f"ingest key {key_id} revoked")
