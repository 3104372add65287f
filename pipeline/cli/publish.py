"""``finops replay|simulate``, ``finops telemetry ingest`` and ``finops
dead-letters``: what goes onto the topics, and what comes back for review."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.common import (
    check_incident,
    console,
    database_url,
    parse_time,
    progress,
    read_source,
    scrapes,
    services,
    titled_table,
)
from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.testbed.simulate.usage import SimConfig


def publish_lines(
    found: Endpoints,
    settings: Settings,
    lines: Iterable[bytes],
    total: int | None,
    per_message: int,
    label: str,
    topic: str | None = None,
) -> None:
    """Publish ``lines`` to ``topic`` (usage by default) in NDJSON messages
    of ``per_message`` events, with a progress bar."""
    from pipeline.stream.kafka import ensure_topics
    from pipeline.stream.producer import BatchingPublisher, PublishResult

    topic = topic or settings.usage_topic
    with progress(label) as bar:
        task = bar.add_task(label, total=total)
        publisher = BatchingPublisher(
            found.kafka_url,
            topic,
            events_per_message=per_message,
            max_message_bytes=settings.max_message_bytes,
            on_progress=lambda n: bar.update(task, completed=n),
            compression=settings.kafka_compression,
        )

        async def run() -> PublishResult:
            await ensure_topics(
                found.kafka_url,
                [settings.usage_topic, settings.usage_dlq_topic, *settings.side_topics],
                settings.partitions,
            )
            return await publisher.publish(lines)

        published = asyncio.run(run())
    console.print(
        f"published {published.events} events in {published.messages} messages to '{topic}'"
    )
    if published.refused:
        console.print(
            f"[yellow]{published.refused} lines larger than the broker's request limit"
            " were not published[/]"
        )


def replay(
    file: Path,
    per_message: Annotated[
        int | None,
        typer.Option(help="events per message (default: batched, FINOPS_EVENTS_PER_MESSAGE)"),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="default: the usage topic; or gpu-telemetry, cache-events")
    ] = None,
) -> None:
    """Publish a JSONL file to a topic (usage by default), bad lines included as they are."""
    settings, found = services()
    total = sum(1 for line in file.open("rb") if line.strip())

    def lines() -> Iterator[bytes]:
        with file.open("rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield line

    publish_lines(
        found,
        settings,
        lines(),
        total,
        per_message or settings.events_per_message,
        "replay",
        topic,
    )


def simulate(
    rate: Annotated[float, typer.Option(help="requests per second of event time")] = 20.0,
    duration: Annotated[float, typer.Option(help="seconds of event time")] = 3600.0,
    seed: int = 7,
    start: Annotated[str | None, typer.Option(help="RFC 3339; default: duration ago")] = None,
    per_message: Annotated[int | None, typer.Option(help="events per message")] = None,
    incident: Annotated[
        str | None, typer.Option(help="inject one incident (see --list-incidents)")
    ] = None,
    side: Annotated[
        bool, typer.Option(help="also GPU telemetry and cache events on their topics")
    ] = True,
    cache_counters: Annotated[
        bool,
        typer.Option(
            "--cache-counters/--cache-per-op",
            help="cache nodes send per-minute counters (count=n), or one event per operation",
        ),
    ] = True,
    continues: Annotated[
        bool,
        typer.Option(
            help="the span ending at --start was published already: leave out its last"
            " telemetry instant, which that span sampled"
        ),
    ] = False,
    list_incidents: Annotated[bool, typer.Option(help="list the incidents and exit")] = False,
) -> None:
    """Publish realistic, seeded traffic: usage, and GPU telemetry and cache events."""
    from pipeline.testbed.simulate.usage import INCIDENTS, SimConfig

    if list_incidents:
        for name, what in INCIDENTS.items():
            console.print(f"[bold]{name}[/]: {what}")
        return
    check_incident(incident)
    settings, found = services()
    begin = parse_time(start) if start else datetime.now(UTC) - timedelta(seconds=duration)
    cfg = SimConfig(start=begin, duration_s=duration, rate=rate, seed=seed, incident=incident)
    per_message = per_message or settings.events_per_message
    publish_simulation(found, settings, cfg, per_message, side, cache_counters, continues)


def publish_simulation(
    found: Endpoints,
    settings: Settings,
    cfg: SimConfig,
    per_message: int,
    side: bool,
    cache_counters: bool = True,
    continues: bool = False,
) -> None:
    """Publish ``cfg``'s usage, and with ``side`` its telemetry and cache
    events (per-minute counters, or with ``cache_counters`` off one per
    operation); ``continues``: the span right before it was published, so its
    first telemetry instant was sampled already."""
    from pipeline.testbed.simulate import side as simulate_side
    from pipeline.testbed.simulate.usage import generate

    events = list(generate(cfg))
    publish_lines(
        found, settings, simulate_side.lines(iter(events)), len(events), per_message, "usage"
    )
    if not side:
        return
    cache = simulate_side.cache_events(events, cfg)
    for label, topic, items in (
        (
            "telemetry",
            settings.telemetry_topic,
            simulate_side.telemetry(events, cfg, baseline=not continues),
        ),
        ("cache", settings.cache_topic, simulate_side.counters(cache) if cache_counters else cache),
    ):
        rows = list(items)
        publish_lines(
            found,
            settings,
            simulate_side.lines(iter(rows)),
            len(rows),
            per_message,
            label,
            topic,
        )


telemetry_app = typer.Typer(help="GPU telemetry.", no_args_is_help=True)


@telemetry_app.command("ingest")
def telemetry_ingest(
    source: Annotated[str, typer.Argument(help="a dcgm-exporter scrape: file path or http(s) URL")],
    interval: Annotated[float, typer.Option(help="seconds between scrapes")] = 15.0,
    count: Annotated[int, typer.Option(help="scrapes to take (0: until interrupted)")] = 1,
) -> None:
    """Read NVIDIA dcgm-exporter metrics and publish them as telemetry samples."""
    from pipeline.energy.dcgm import parse_scrape

    settings, found = services()
    for _ in scrapes(interval, count):
        samples = parse_scrape(read_source(source), datetime.now(UTC))
        lines = [s.model_dump_json(exclude_none=True).encode() for s in samples]
        publish_lines(
            found,
            settings,
            iter(lines),
            len(lines),
            settings.events_per_message,
            "telemetry",
            settings.telemetry_topic,
        )


dead_app = typer.Typer(help="Review and replay rejected input.", no_args_is_help=True)


@dead_app.command("list")
def dead_list() -> None:
    """Dead letters by reason."""
    from pipeline.stream.dead_letter_replay import summary

    table = titled_table(
        "dead letters", "topic", "reason", "count", "replayed", numbers={"count", "replayed"}
    )
    for row in summary(database_url()):
        table.add_row(row.topic, row.reason, str(row.count), str(row.replayed))
    console.print(table)


@dead_app.command("replay")
def dead_replay(
    reason: Annotated[str, typer.Option(help="reason prefix, e.g. ts_in_future or schema")],
    topic: Annotated[
        str | None, typer.Option(help="only the dead letters read from this topic")
    ] = None,
) -> None:
    """Re-publish reviewed dead letters, each to the topic it came from (safe to repeat)."""
    from pipeline.stream.dead_letter_replay import replay

    settings, found = services()
    counts = replay(
        found.database_url,
        found.kafka_url,
        reason,
        topic=topic,
        max_message_bytes=settings.max_message_bytes,
        compression=settings.kafka_compression,
    )
    for source, n in sorted(counts.items()):
        console.print(f"re-published {n} dead letters with reason {reason!r} to {source!r}")
    if not counts:
        console.print(f"re-published 0 dead letters with reason {reason!r}")
