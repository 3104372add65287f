"""The ``alert`` table as on-call reads and acknowledges it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

_LIST = text(
    "SELECT id, status, severity, rule, array_to_string(subject, '/'), window_start,"
    " resolved_at, acked_by, summary, contributors FROM alert"
    " WHERE (:all OR status = 'firing') AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)"
    " ORDER BY fired_at DESC, id DESC LIMIT :limit"
)
_ACK = text("UPDATE alert SET acked_at = now(), acked_by = :by WHERE id = :id RETURNING rule")


@dataclass(frozen=True)
class AlertRow:
    id: int
    status: str
    severity: str
    rule: str
    subject: str  # its key parts joined by '/'
    window_start: datetime
    resolved_at: datetime | None
    acked_by: str | None
    summary: str
    contributors: list[tuple[str, str]]  # (what, how much), largest first


def list_alerts(
    engine: Engine, *, include_resolved: bool, tenant: str | None, limit: int
) -> list[AlertRow]:
    """Newest first; firing ones only unless ``include_resolved``."""
    with engine.connect() as conn:
        rows = conn.execute(
            _LIST, {"all": include_resolved, "tenant": tenant, "limit": limit}
        ).all()
    return [
        AlertRow(
            id=r[0],
            status=r[1],
            severity=r[2],
            rule=r[3],
            subject=r[4],
            window_start=r[5],
            resolved_at=r[6],
            acked_by=r[7],
            summary=r[8],
            contributors=[(what, much) for what, much in r[9]],
        )
        for r in rows
    ]


def acknowledge(engine: Engine, alert_id: int, by: str) -> str | None:
    """Mark alert ``alert_id`` taken by ``by``; its rule, None if no such alert."""
    with engine.begin() as conn:
        found = conn.execute(_ACK, {"by": by, "id": alert_id}).first()
    return None if found is None else str(found[0])
