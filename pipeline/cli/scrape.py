"""``finops cache scrape``: serving nodes' prefix-cache counters onto the
cache topic; and how every scrape command reads its source."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from pipeline.cli.common import console, read_source, scrapes, services
from pipeline.cli.publish import publish_lines


def cache_scrape(
    url: Annotated[str, typer.Argument(help="a vLLM or SGLang /metrics URL (or a file)")],
    node: Annotated[str, typer.Option(help="the serving node's id (usage's node_id)")],
    interval: Annotated[float, typer.Option(help="seconds between scrapes")] = 15.0,
    count: Annotated[int, typer.Option(help="scrapes to take (0: until interrupted)")] = 0,
    provider: Annotated[str, typer.Option(help="the price book's provider of its models")] = (
        "self-hosted"
    ),
) -> None:
    """Read a serving node's prefix-cache counters and publish their growth as
    cache events (tenant 'unattributed', route 'node:<node>'; the first scrape
    is the baseline)."""
    from pipeline.ingest.serving_metrics import CounterDeltas, cache_events

    settings, found = services()
    deltas = CounterDeltas()
    for taken in scrapes(interval, count):
        try:
            text = read_source(url)
        except OSError as exc:  # a node restarting: the next scrape tries again
            console.print(f"[yellow]scrape {taken} of {url} failed: {exc}[/]")
            continue
        events = cache_events(deltas.growth(text), node, provider, datetime.now(UTC))
        if not events:
            console.print(f"scrape {taken}: no growth" + (" (baseline)" if taken == 1 else ""))
            continue
        lines = [e.model_dump_json(exclude_none=True).encode() for e in events]
        publish_lines(
            found, settings, iter(lines), len(lines), settings.events_per_message,
            "cache counters", settings.cache_topic,
        )  # fmt: skip
