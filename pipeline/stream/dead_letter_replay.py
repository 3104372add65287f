"""Review and replay of dead letters.

A dead letter keeps the line as sent (minus prompt text and credentials),
so after review it can be re-published to the usage topic. Replay is safe to
repeat: an event that reaches the windows twice is a duplicate by its key,
and the keys are kept permanently. Lines rejected for their event time are
admitted on replay only by a worker whose bounds were widened for the
reviewed backfill (``FINOPS_MAX_EVENT_AGE_DAYS``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg

from pipeline.stream.producer import BatchingPublisher


@dataclass(frozen=True)
class DeadLetterSummary:
    reason: str
    count: int
    replayed: int


def summary(database_url: str) -> list[DeadLetterSummary]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT split_part(reason, ':', 1), count(*),"
            " count(*) FILTER (WHERE replayed_at IS NOT NULL)"
            " FROM dead_letter GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    return [DeadLetterSummary(str(r), int(c), int(d)) for r, c, d in rows]


def replay(
    database_url: str,
    kafka_url: str,
    topic: str,
    reason: str,
    *,
    max_message_bytes: int,
    compression: str | None,
) -> int:
    """Re-publish the not yet replayed dead letters whose reason starts with
    ``reason``; mark them replayed once the broker acknowledged them."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, raw FROM dead_letter WHERE replayed_at IS NULL"
            " AND starts_with(reason, %s) ORDER BY id",
            (reason,),
        ).fetchall()
    if not rows:
        return 0
    publisher = BatchingPublisher(
        kafka_url,
        topic,
        events_per_message=100,
        max_message_bytes=max_message_bytes,
        compression=compression,
    )
    asyncio.run(publisher.publish(bytes(raw) for _, raw in rows))
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE dead_letter SET replayed_at = now() WHERE id = ANY(%s)",
            ([int(i) for i, _ in rows],),
        )
    return len(rows)
