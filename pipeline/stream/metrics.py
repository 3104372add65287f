"""Ingest and fault metrics in the Prometheus text format, read from the
sink's own bookkeeping in PostgreSQL (so they survive worker restarts and
add up across workers): accepted, duplicate and dead-lettered lines per
partition, dead letters by reason, and the balance the guarantees promise."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class IngestCollector(Collector):
    def __init__(self, database_url: str) -> None:
        self._url = database_url

    def collect(self) -> Iterator[Metric]:
        with psycopg.connect(self._url) as conn:
            offsets = conn.execute(
                "SELECT topic, partition, events_accepted, events_duplicate,"
                " lines_dead_lettered, next_offset FROM sink_offset WHERE sink = 'spend'"
            ).fetchall()
            reasons = conn.execute(
                "SELECT topic, split_part(reason, ':', 1), count(*),"
                " count(*) FILTER (WHERE replayed_at IS NOT NULL)"
                " FROM dead_letter GROUP BY 1, 2"
            ).fetchall()
        families = {
            "accepted": CounterMetricFamily(
                "finops_events_accepted",
                "Events counted in the windows",
                labels=["topic", "partition"],
            ),
            "duplicate": CounterMetricFamily(
                "finops_events_duplicate",
                "Re-sent events counted once",
                labels=["topic", "partition"],
            ),
            "dead": CounterMetricFamily(
                "finops_lines_dead_lettered",
                "Lines rejected to the dead-letter table and topic",
                labels=["topic", "partition"],
            ),
        }
        applied = GaugeMetricFamily(
            "finops_sink_next_offset",
            "Next offset the sink will apply",
            labels=["topic", "partition"],
        )
        for topic, partition, accepted, duplicate, dead, next_offset in offsets:
            labels = [str(topic), str(partition)]
            families["accepted"].add_metric(labels, float(accepted))
            families["duplicate"].add_metric(labels, float(duplicate))
            families["dead"].add_metric(labels, float(dead))
            applied.add_metric(labels, float(next_offset))
        by_reason = GaugeMetricFamily(
            "finops_dead_letters", "Dead letters stored, by reason", labels=["topic", "reason"]
        )
        replayed = GaugeMetricFamily(
            "finops_dead_letters_replayed", "Dead letters re-published", labels=["topic", "reason"]
        )
        for topic, reason, count, done in reasons:
            by_reason.add_metric([str(topic), str(reason)], float(count))
            replayed.add_metric([str(topic), str(reason)], float(done))
        yield from families.values()
        yield from (applied, by_reason, replayed)


def exposition(database_url: str) -> str:
    registry = CollectorRegistry()
    registry.register(IngestCollector(database_url))
    return generate_latest(registry).decode()
