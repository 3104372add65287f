"""Tokens per joule, Wh per 1k tokens and energy by any of model, batch
bucket, cache state, tenant, route, feature; measured and estimated apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlalchemy import Engine, text

DIMENSIONS: Final = (
    "model",
    "batch_bucket",
    "cache_state",
    "tenant",
    "route",
    "feature",
    "node_id",
)
MJ_PER_WH: Final = Decimal(3_600_000)


@dataclass(frozen=True)
class EnergyGroup:
    key: tuple[str, ...]
    source: str
    attempts: int
    tokens: int
    energy_mj: int

    @property
    def tokens_per_joule(self) -> Decimal | None:
        return Decimal(self.tokens) * 1000 / self.energy_mj if self.energy_mj else None

    @property
    def wh_per_1k_tokens(self) -> Decimal | None:
        return Decimal(self.energy_mj) * 1000 / self.tokens / MJ_PER_WH if self.tokens else None


def energy(
    engine: Engine, start: datetime, end: datetime, by: tuple[str, ...]
) -> list[EnergyGroup]:
    unknown = set(by) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}; choose from {DIMENSIONS}")
    cols = ", ".join(by)  # names checked against DIMENSIONS above
    group = f"{cols}, source" if by else "source"
    sql = text(
        f"SELECT {group}, sum(attempts), sum(input_tokens + output_tokens), sum(energy_mj)"
        " FROM energy_window WHERE window_start >= :start AND window_start < :end"
        f" GROUP BY {group} ORDER BY {group}"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"start": start, "end": end}).all()
    n = len(by)
    return [
        EnergyGroup(
            tuple(str(v) for v in r[:n]), str(r[n]), int(r[n + 1]), int(r[n + 2]), int(r[n + 3])
        )
        for r in rows
    ]


@dataclass(frozen=True)
class NodeTotals:
    measured_mj: int
    attributed_mj: int
    idle_mj: int
    unmeasured_ms: int
    open_windows: int


def node_totals(engine: Engine, start: datetime, end: datetime) -> NodeTotals:
    sql = text(
        "SELECT coalesce(sum(measured_mj), 0), coalesce(sum(attributed_mj), 0),"
        " coalesce(sum(idle_mj), 0), coalesce(sum(unmeasured_ms), 0),"
        " count(*) FILTER (WHERE NOT final)"
        " FROM node_energy_window WHERE window_start >= :start AND window_start < :end"
    )
    with engine.connect() as conn:
        r = conn.execute(sql, {"start": start, "end": end}).one()
    return NodeTotals(*(int(v) for v in r))
