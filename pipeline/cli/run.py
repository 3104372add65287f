"""``finops worker``: a faust worker in the consumer group, and the drain
the demo runs with a progress bar."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import console, progress, services
from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings


def worker(
    drain: Annotated[bool, typer.Option(help="exit 0 once every partition is caught up")] = False,
    stats_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    log_level: str = "warning",
) -> None:
    """Run a faust worker in the consumer group."""
    from pipeline.worker.process import run_worker

    settings, found = services()
    code = run_worker(
        settings,
        found.kafka_url,
        found.database_url,
        drain=drain,
        stats_file=stats_file,
        loglevel=log_level,
    )
    raise typer.Exit(code)


def drain_with_progress(settings: Settings, found: Endpoints) -> None:
    """Run ``finops worker --drain`` as a child and show its progress."""
    import psycopg

    from pipeline.spend.sink import SINK
    from pipeline.stream.kafka import end_offsets
    from pipeline.stream.offsets import applied_offsets

    targets = asyncio.run(end_offsets(found.kafka_url, settings.usage_topic))
    total = sum(targets.values())
    env = {
        **os.environ,
        "FINOPS_KAFKA_URL": found.kafka_url,
        "FINOPS_DATABASE_URL": found.database_url,
    }
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--drain"], env=env)
    with (
        progress("drain", unit="messages") as bar,
        psycopg.connect(found.database_url, autocommit=True) as conn,
    ):
        task = bar.add_task("drain", total=total)
        while proc.poll() is None:
            done = applied_offsets(conn, SINK, settings.usage_topic)
            bar.update(task, completed=sum(min(done.get(p, 0), e) for p, e in targets.items()))
            time.sleep(0.3)
        bar.update(task, completed=total)
    if proc.returncode:
        console.print(f"[red]worker exited with {proc.returncode}[/]")
        raise typer.Exit(proc.returncode)
