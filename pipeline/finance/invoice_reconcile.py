"""``finops reconcile --invoice FILE.csv``: metered usage against what a
provider invoiced, per provider, model and day, and the gateway's own token
counts against the billed ones per model.

The invoice (or provider usage export) is CSV with a header and the columns
``date`` (YYYY-MM-DD, UTC), ``provider``, ``model``, ``input_tokens``,
``output_tokens`` and ``cost_usd``; other columns are ignored. Drift is
(invoiced - metered) / metered; a day is flagged when its input tokens,
output tokens or cost drift by more than the threshold either way, or when
only one side has it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from sqlalchemy import Connection, text

from models.months import midnight
from reports.spend_grain import spend_rows

REQUIRED: Final = ("date", "provider", "model", "input_tokens", "output_tokens", "cost_usd")
Key = tuple[date, str, str]  # day, provider, model


class InvoiceError(ValueError):
    pass


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True)
class DayDrift:
    day: date
    provider: str
    model: str
    metered: Usage | None
    invoiced: Usage | None
    input_drift: Decimal | None
    output_drift: Decimal | None
    cost_drift: Decimal | None
    flagged: bool
    why: str


@dataclass(frozen=True)
class ModelDrift:
    model: str
    attempts: int
    billed_tokens: int
    abs_diff_tokens: int

    @property
    def drift(self) -> Decimal | None:
        if not self.billed_tokens:
            return None
        return (Decimal(self.abs_diff_tokens) / Decimal(self.billed_tokens)).quantize(
            Decimal("0.0001")
        )


def parse_invoice(content: str) -> dict[Key, Usage]:
    reader = csv.DictReader(io.StringIO(content))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise InvoiceError(f"invoice CSV lacks the columns {', '.join(missing)}")
    out: dict[Key, Usage] = {}
    for n, row in enumerate(reader, 2):
        try:
            key = (date.fromisoformat(row["date"]), row["provider"], row["model"])
            usage = Usage(
                int(row["input_tokens"]), int(row["output_tokens"]), Decimal(row["cost_usd"])
            )
        except (ValueError, InvalidOperation) as exc:
            raise InvoiceError(f"line {n}: {exc}") from exc
        out[key] = out.get(key, Usage()) + usage
    return out


def _drift(invoiced: Decimal | int, metered: Decimal | int) -> Decimal | None:
    if not metered:
        return None if not invoiced else Decimal("Infinity")
    return ((Decimal(invoiced) - Decimal(metered)) / Decimal(metered)).quantize(Decimal("0.0001"))


def compare(
    metered: Mapping[Key, Usage], invoiced: Mapping[Key, Usage], threshold: Decimal
) -> list[DayDrift]:
    """Every (day, provider, model) either side has, in order."""
    out = []
    for key in sorted(set(metered) | set(invoiced)):
        m, i = metered.get(key), invoiced.get(key)
        if m is None or i is None:
            out.append(
                DayDrift(*key, m, i, None, None, None, True,
                         "not metered" if m is None else "not invoiced")
            )  # fmt: skip
            continue
        drifts = {
            "input tokens": _drift(i.input_tokens, m.input_tokens),
            "output tokens": _drift(i.output_tokens, m.output_tokens),
            "cost": _drift(i.cost_usd, m.cost_usd),
        }
        over = [
            f"{name} {d:+.2%}" for name, d in drifts.items() if d is not None and abs(d) > threshold
        ]
        out.append(
            DayDrift(*key, m, i, drifts["input tokens"], drifts["output tokens"], drifts["cost"],
                     bool(over), ", ".join(over))
        )  # fmt: skip
    return out


def metered(conn: Connection, days: Iterable[date]) -> dict[Key, Usage]:
    """Metered usage per UTC day, provider and model over ``days``' range."""
    span = sorted(days)
    if not span:
        return {}
    spend, params = _days_of_spend(span[0], span[-1])
    rows = conn.execute(
        text(
            "SELECT (window_start AT TIME ZONE 'UTC')::date AS d, provider, model,"
            " sum(input_tokens), sum(output_tokens), sum(cost_usd)"
            f" FROM {spend} AS s GROUP BY d, provider, model"
        ),
        params,
    )
    return {(d, p, m): Usage(int(i), int(o), c) for d, p, m, i, o, c in rows}


def _days_of_spend(first: date, last: date) -> tuple[str, dict[str, datetime]]:
    """The spend of UTC days ``first`` to ``last``: their daily roll-ups."""
    return spend_rows(midnight(first), midnight(last + timedelta(days=1)))


def tokenizer_drift(conn: Connection, first: date, last: date) -> list[ModelDrift]:
    spend, params = _days_of_spend(first, last)
    rows = conn.execute(
        text(
            "SELECT model, sum(drift_attempts), sum(drift_billed_tokens), sum(drift_abs_tokens)"
            f" FROM {spend} AS s GROUP BY model HAVING sum(drift_attempts) > 0 ORDER BY model"
        ),
        params,
    )
    return [ModelDrift(m, int(a), int(b), int(d)) for m, a, b, d in rows]
