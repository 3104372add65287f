"""What every command shares: the one console, the one table shape, the
services a command needs (and only those), and time arguments."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.embedded import endpoints
from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings

# Piped output (logs, CI, tests) gets room for the wide tables instead of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=160)
ALL_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def services() -> tuple[Settings, Endpoints]:
    """The broker and PostgreSQL, embedded ones started if not configured."""
    settings = Settings()
    return settings, endpoints.resolve(settings)


def database_url() -> str:
    """PostgreSQL alone: no broker is started for commands that do not publish."""
    return endpoints.database_url(Settings())


def titled_table(title: str, *columns: str, numbers: Collection[str] = ()) -> Table:
    """The one shape of every table the CLI prints: a left-aligned title,
    text columns left and those named in ``numbers`` right, so figures
    line up by their digits."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in numbers else "left")
    return table


def progress(label: str, *, unit: str = "", transient: bool = False) -> Progress:
    """A bar for long work: what it is, how far, how long so far."""
    units = [TextColumn(unit)] if unit else []
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *units,
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def when(at: datetime | None) -> str:
    """A moment in a table: to the minute, or ``-`` for never."""
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


def parse_time(value: str) -> datetime:
    """RFC 3339, or a bare date (midnight UTC). A time without a zone is UTC."""
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def between(from_: str | None, to: str | None) -> tuple[datetime, datetime]:
    """``--from``/``--to``, open ends meaning all time."""
    return (
        parse_time(from_) if from_ else ALL_TIME[0],
        parse_time(to) if to else ALL_TIME[1],
    )


def dimensions(by: str) -> tuple[str, ...]:
    """``--by a,b``."""
    return tuple(d.strip() for d in by.split(",") if d.strip())


def check_incident(incident: str | None) -> None:
    from pipeline.testbed.simulate.usage import INCIDENTS

    if incident is not None and incident not in INCIDENTS:
        raise typer.BadParameter(f"choose from {', '.join(INCIDENTS)}", param_hint="--incident")


def scrapes(interval: float, count: int) -> Iterator[int]:
    """Scrape numbers 1, 2, ... ``interval`` seconds apart; ``count`` of
    them (0: until interrupted)."""
    taken = 0
    while count == 0 or taken < count:
        if taken:
            time.sleep(interval)
        taken += 1
        yield taken


def read_source(source: str) -> str:
    """A scrape: an http(s) URL (at most 16 MiB) or a file."""
    from urllib.request import urlopen

    if source.startswith(("http://", "https://")):
        with urlopen(source, timeout=10) as response:
            return bytes(response.read(16 * 1024**2)).decode("utf-8", "replace")
    return Path(source).read_text()
