"""Review and replay of dead letters.

A dead letter keeps the line as sent (minus prompt text and credentials),
so after review it can be re-published to the topic it was read from (not a
line kept only as its size: that one stays for review). Replay is safe to
repeat: an event that reaches the windows twice is a duplicate by its key,
and the keys are kept permanently. Lines rejected for their event time are
admitted on replay only by a worker whose bounds were widened for the
reviewed backfill (``FINOPS_MAX_EVENT_AGE_DAYS``). Dead letters of the front
door (partition -1, topic ``ingest:<door>``) hold the producer's shape, not
our contract, so they are never replayed: the producer resends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg

from pipeline.stream.producer import BatchingPublisher
from pipeline.stream.redaction import kept_whole


@dataclass(frozen=True)
class DeadLetterSummary:
    topic: str
    reason: str  # the category, before the first colon
    count: int
    replayed: int


def summary(database_url: str) -> list[DeadLetterSummary]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic, split_part(reason, ':', 1), count(*),"
            " count(*) FILTER (WHERE replayed_at IS NOT NULL)"
            " FROM dead_letter GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
        ).fetchall()
    return [DeadLetterSummary(str(t), str(r), int(c), int(d)) for t, r, c, d in rows]


def replay(
    database_url: str,
    kafka_url: str,
    reason: str,
    *,
    topic: str | None = None,
    max_message_bytes: int,
    compression: str | None,
) -> dict[str, int]:
    """Re-publish the not yet replayed dead letters whose reason starts with
    ``reason`` (of ``topic`` only, if given), each to the topic it was read
    from; mark them replayed once the broker acknowledged them. How many,
    per topic."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, topic, raw FROM dead_letter WHERE replayed_at IS NULL AND partition >= 0"
            " AND starts_with(reason, %s) AND (%s::text IS NULL OR topic = %s) ORDER BY id",
            (reason, topic, topic),
        ).fetchall()
    by_topic: dict[str, list[tuple[int, bytes]]] = {}
    for id_, source, raw in rows:
        # A stand-in for a line that was not kept (too large, or unparseable
        # and naming a secret) cannot be replayed: it stays for review.
        if kept_whole(bytes(raw)):
            by_topic.setdefault(str(source), []).append((int(id_), bytes(raw)))
    for source, letters in by_topic.items():
        publisher = BatchingPublisher(
            kafka_url,
            source,
            events_per_message=100,
            max_message_bytes=max_message_bytes,
            compression=compression,
        )
        asyncio.run(publisher.publish(raw for _, raw in letters))
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "UPDATE dead_letter SET replayed_at = now() WHERE id = ANY(%s)",
                ([i for i, _ in letters],),
            )
    return {source: len(letters) for source, letters in by_topic.items()}
