"""The demo hours already published (``demo_run``), read and recorded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert

from models.tables import demo_run
from pipeline.demo_hours import DemoRun


def demo_at(engine: Engine, hour: datetime) -> DemoRun | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(demo_run.c.rate, demo_run.c.incident).where(demo_run.c.hour == hour)
        ).one_or_none()
    return None if row is None else DemoRun(row.rate, row.incident)


def record_demo(engine: Engine, hour: datetime, run: DemoRun) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(demo_run)
            .values(hour=hour, rate=run.rate, incident=run.incident)
            .on_conflict_do_nothing(index_elements=["hour"])
        )
