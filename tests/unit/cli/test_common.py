"""Every CLI report table lines its figures up by their digits."""

from __future__ import annotations

from rich.console import Console

from pipeline.cli.common import titled_table


def test_number_columns_align_right_and_text_columns_left() -> None:
    table = titled_table("Spend", "tenant", "USD", numbers={"USD"})
    table.add_row("acme", "1.50")
    table.add_row("globex-industries", "1234.00")
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    lines = console.export_text().splitlines()
    assert lines[0].startswith("Spend")  # the title sits left, not centred
    acme = next(line for line in lines if "acme" in line)
    globex = next(line for line in lines if "globex" in line)
    # Right-aligned: the figures end in the same column; left-aligned: the
    # names start in the same column.
    assert acme.index("1.50") + len("1.50") == globex.index("1234.00") + len("1234.00")
    assert acme.index("acme") == globex.index("globex")
    assert [c.justify for c in table.columns] == ["left", "right"]
