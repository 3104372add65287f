"""The demo hours claimed and published (``demo_run``), read and recorded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert

from models.tables import demo_run
from pipeline.testbed.demo_hours import DemoRun, HeldHour


def demo_at(engine: Engine, hour: datetime) -> HeldHour | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(demo_run.c.rate, demo_run.c.incident, demo_run.c.published_at).where(
                demo_run.c.hour == hour
            )
        ).one_or_none()
    if row is None:
        return None
    return HeldHour(DemoRun(row.rate, row.incident), complete=row.published_at is not None)


def claim_hour(engine: Engine, hour: datetime, run: DemoRun) -> bool:
    """Record that ``run`` is publishing ``hour``; False if another demo
    claimed it first."""
    with engine.begin() as conn:
        claimed = conn.execute(
            insert(demo_run)
            .values(hour=hour, rate=run.rate, incident=run.incident)
            .on_conflict_do_nothing(index_elements=["hour"])
            .returning(demo_run.c.hour)
        ).first()
    return claimed is not None


def mark_published(engine: Engine, hour: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(demo_run).where(demo_run.c.hour == hour).values(published_at=func.now())
        )
