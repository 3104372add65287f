"""The one shape of every table the CLI prints: a left-aligned title, text
columns left and number columns right, so figures line up by their digits."""

from __future__ import annotations

from collections.abc import Collection

from rich.table import Table


def titled_table(title: str, *columns: str, numbers: Collection[str] = ()) -> Table:
    """A table with ``columns``; those named in ``numbers`` are right-aligned."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in numbers else "left")
    return table
