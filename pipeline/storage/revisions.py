"""Loading versioned reference data (prices, grid intensity, embodied
emissions, sites) without ever rewriting history.

A row whose key is new is inserted; the same row again changes nothing; a
different value for an existing key is a conflict, and any conflict refuses
the whole load (one transaction): publish a new version instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine, Table, select
from sqlalchemy.dialects.postgresql import insert


@dataclass
class LoadResult:
    inserted: int = 0
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Version:
    table: Table
    key: tuple[str, ...]
    compared: tuple[str, ...]  # the columns that must match for "unchanged"
    values: Mapping[str, object]
    conflict: str  # what to say if ``compared`` differs


def load_versions(engine: Engine, versions: Iterable[Version]) -> LoadResult:
    result = LoadResult()
    with engine.begin() as conn:
        for v in versions:
            t = v.table
            inserted = conn.execute(
                insert(t).values(**v.values).on_conflict_do_nothing().returning(t.c[v.key[0]])
            ).first()
            if inserted is not None:
                result.inserted += 1
                continue
            existing = conn.execute(
                select(*(t.c[c] for c in v.compared)).where(*(t.c[k] == v.values[k] for k in v.key))
            ).one()
            if tuple(existing) == tuple(v.values[c] for c in v.compared):
                result.unchanged += 1
            else:
                result.conflicts.append(v.conflict)
        if result.conflicts:
            conn.rollback()
            result.inserted = 0
    return result
