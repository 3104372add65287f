"""``finops``: the command line of the pipeline, assembled from one module
per command group."""

from __future__ import annotations

# First, before the seconds of imports below: see its docstring.
import pipeline.worker.stop_signal  # noqa: F401

# isort: split

import typer

from pipeline.cli import alerts, finance, ingest, local, ops, publish, reference, run, views, web
from pipeline.stream.redaction import redact_logs

redact_logs()

app = typer.Typer(
    help="LLM FinOps pipeline: usage events in, exact priced windows out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# The system on this machine, and the whole of it in one command.
app.command()(local.up)
app.command()(local.down)
app.command()(local.status)
app.command()(local.demo)
# Traffic in, and the workers that process it.
app.command()(publish.replay)
app.command()(publish.simulate)
app.command()(run.worker)
# What the windows say.
app.command("spend")(views.spend_cmd)
app.command("energy")(views.energy_cmd)
# Checking the guarantees and the throughput.
app.command()(ops.reconcile)
app.command()(ops.metrics)
app.command()(ops.chaos)
app.command()(ops.bench)
app.command()(ops.soak)
# Finance and the pages.
app.command()(finance.forecast)
app.command()(web.serve)

app.add_typer(local.db_app, name="db")
app.add_typer(reference.prices_app, name="prices")
app.add_typer(reference.carbon_app, name="carbon")
app.add_typer(alerts.catalog_app, name="catalog")
app.add_typer(alerts.alerts_app, name="alerts")
app.add_typer(publish.dead_app, name="dead-letters")
app.add_typer(publish.telemetry_app, name="telemetry")
app.add_typer(finance.month_app, name="month")
app.add_typer(finance.report_app, name="report")
app.add_typer(web.tokens_app, name="tokens")
app.add_typer(ingest.ingest_app, name="ingest")
app.add_typer(views.cache_app, name="cache")
