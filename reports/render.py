"""Jinja2 templates for the pages and documents in ``reports/templates``."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from reports.names import file_slug, url_key

CENT = Decimal("0.01")


def usd(value: Decimal | None) -> str:
    """Dollars to the cent (half-even); amounts under a cent keep four places
    so a small tenant's page does not read $0.00 everywhere."""
    if value is None:
        return "-"
    if value and abs(value) < CENT:
        return f"${value.quantize(Decimal('0.0001'), ROUND_HALF_EVEN)}"
    return f"${value.quantize(CENT, ROUND_HALF_EVEN):,}"


def pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def number(value: int | Decimal | None) -> str:
    return "-" if value is None else f"{value:,}"


env = Environment(
    loader=PackageLoader("reports", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(usd=usd, pct=pct, number=number, url_key=url_key, file_slug=file_slug)


def render(template: str, **context: Any) -> str:
    return env.get_template(template).render(**context)
