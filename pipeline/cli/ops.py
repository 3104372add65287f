"""``finops reconcile|metrics|chaos|bench``: checking the guarantees and
the throughput of a running system."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, TaskID

from pipeline.cli.common import console, database_url, progress, services, titled_table
from pipeline.cli.finance import reconcile_invoice
from pipeline.settings import Settings


def reconcile(
    ledger: Annotated[
        bool, typer.Option("--ledger", help="recompute the windows from the retained usage log")
    ] = False,
    invoice: Annotated[
        Path | None,
        typer.Option(help="a provider invoice or usage export (CSV) to compare per day and model"),
    ] = None,
    threshold: Annotated[
        str, typer.Option(help="flag days whose tokens or cost drift more than this share")
    ] = "0.02",
) -> None:
    """Check the stored windows against an independent recomputation
    (--ledger), or metered usage against a provider's invoice (--invoice)."""
    from pipeline.spend.reconcile import reconcile_ledger

    if invoice is not None:
        raise typer.Exit(reconcile_invoice(invoice, Decimal(threshold)))
    if not ledger:
        raise typer.BadParameter(
            "say what to reconcile against: --ledger or --invoice FILE", param_hint="--ledger"
        )
    settings, found = services()
    console.print("reading the usage log and recomputing the windows ...")
    rec = reconcile_ledger(
        found.kafka_url,
        found.database_url,
        settings.usage_topic,
        settings.admission(datetime.now(UTC)),
    )
    want, c = rec.ledger, rec.counters
    numbers = ("ledger (from the log)", "sink (PostgreSQL)")
    table = titled_table("ledger vs sink", "", *numbers, numbers=numbers)
    table.add_row(
        "lines in the log", str(want.produced), str(c.accepted + c.duplicates + c.dead_lettered)
    )
    table.add_row("counted", str(want.counted), str(c.accepted))
    table.add_row("duplicates", str(want.duplicates), str(c.duplicates))
    table.add_row("dead-lettered", str(want.dead_lettered), str(c.dead_lettered))
    table.add_row("windows", str(len(want.windows)), "")
    console.print(table)
    if rec.diffs:
        diffs = titled_table(
            f"{len(rec.diffs)} differing window columns",
            "window",
            "column",
            "ledger",
            "stored",
            numbers={"ledger", "stored"},
        )
        for d in rec.diffs[:50]:
            diffs.add_row(" ".join(str(k) for k in d.key), d.column, str(d.expected), str(d.stored))
        console.print(diffs)
    verdict = "equal" if rec.ok else "DIFFERENT"
    print(
        f"reconcile: {verdict} lost={rec.lost} double_counted={rec.double_counted}"
        f" differing_columns={len(rec.diffs)} balanced={'yes' if rec.balanced else 'no'}"
    )
    raise typer.Exit(0 if rec.ok else 1)


def metrics() -> None:
    """Ingest counters and dead letters in the Prometheus text format."""
    from pipeline.stream.metrics import exposition

    print(exposition(database_url()), end="")


def chaos(
    scenario: Annotated[
        str, typer.Option(help="kill-worker, sink-error, rebalance, ..., or all of them: all")
    ],
    events: Annotated[int, typer.Option(help="simulated events to send")] = 100_000,
    seed: int = 1,
    kills: Annotated[int, typer.Option(help="kill-worker: random SIGKILLs")] = 20,
    stall_s: Annotated[float, typer.Option(help="broker-stall: seconds frozen")] = 20.0,
    keep: Annotated[bool, typer.Option(help="keep the run's database even if it passes")] = False,
) -> None:
    """Run a fault scenario against real workers; the last line is the verdict
    (with --scenario all: one verdict line per scenario, then the total)."""
    from pipeline.testbed.chaos.harness import Target, embedded_target
    from pipeline.testbed.chaos.run import run_scenario
    from pipeline.testbed.chaos.scenarios import SCENARIOS, Intensity

    if scenario != "all" and scenario not in SCENARIOS:
        choices = ", ".join([*SCENARIOS, "all"])
        raise typer.BadParameter(f"choose one of {choices}", param_hint="--scenario")
    settings = Settings()
    if settings.kafka_url and settings.database_url:
        target = Target(settings.kafka_url, settings.database_url)
    else:
        target = embedded_target(settings.home)
    verdicts = []
    for name in SCENARIOS if scenario == "all" else [scenario]:
        with progress(f"{name}: draining", transient=True) as bar:
            task = bar.add_task("drain", total=None)
            verdict = run_scenario(
                target,
                name,
                events,
                seed=seed,
                intensity=Intensity(kills=kills, stall_s=stall_s),
                keep=keep,
                say=console.print,
                on_progress=partial(_advance, bar, task),
            )
        for line in verdict.details:
            console.print(f"  {line}", markup=False, highlight=False)
        for leak in verdict.leaks:
            console.print(f"  canary found in {leak}", markup=False)
        print(verdict.line(), flush=True)
        verdicts.append(verdict)
    if len(verdicts) > 1:
        passed = sum(v.ok for v in verdicts)
        print(f"total: {passed} of {len(verdicts)} scenarios passed")
    raise typer.Exit(0 if all(v.ok for v in verdicts) else 1)


def _advance(bar: Progress, task: TaskID, done: int, total: int) -> None:
    bar.update(task, completed=done, total=total)


def bench(
    events: Annotated[int, typer.Option(help="events per message shape")] = 200_000,
    shapes: Annotated[
        str, typer.Option(help="any of batched,joined,per-op,single")
    ] = "batched,joined,per-op,single",
    rounds: Annotated[
        int, typer.Option(min=1, help="measure the shapes this many times, interleaved")
    ] = 1,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes in the pipeline's consumer group")
    ] = 1,
    paced_s: Annotated[
        float,
        typer.Option(
            min=0,
            help="seconds of steady load at half the measured rate, for freshness"
            " (the spend-path shapes; 0: none)",
        ),
    ] = 15.0,
) -> None:
    """Pipeline throughput against a raw aiokafka consumer, same events, same run;
    then freshness under a steady load at half that rate."""
    from pipeline.testbed.bench import SHAPES, run_bench

    settings, found = services()
    shape_names = tuple(s.strip() for s in shapes.split(","))
    unknown = sorted(set(shape_names) - set(SHAPES))
    if unknown:
        raise typer.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}", param_hint="--shapes"
        )
    if workers > settings.partitions:
        raise typer.BadParameter(
            f"{workers} workers share {settings.partitions} partitions: some would idle",
            param_hint="--workers",
        )
    run_bench(settings, found, events, shape_names, console, rounds, workers, paced_s)


def soak(
    events: Annotated[int, typer.Option(min=1, help="events to publish, then drain")] = 10_000_000,
    tenants: Annotated[
        int, typer.Option(min=1, help="simulated tenants: about 20 keys each")
    ] = 5_000,
) -> None:
    """A worker's memory over many events and keys, generated as they are published."""
    from pipeline.testbed.soak import run_soak

    settings, found = services()
    run_soak(settings, found, events, tenants, console)
