"""The worker's own gauges, refreshed by timers of its app: consumer lag per
partition it owns (the consumer's high watermark minus the sink's applied
offset), faults by kind, node-minutes whose energy waits to be split, and
firing alerts by rule. The stream's counters are in
:mod:`pipeline.stream.live_metrics`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, text

from pipeline.stream import live_metrics as live
from pipeline.stream.offsets import OffsetSink

log = logging.getLogger(__name__)

FAULTS = live.CountersBy(
    "finops_faults", "Faults met by this process, by kind (the `fault` log lines)", "kind"
)
ENERGY_PENDING = Gauge(
    "finops_energy_windows_pending", "Node-minutes whose measured energy is not split yet"
)
ALERTS_FIRING = Gauge("finops_alerts_firing", "Alerts firing now, by rule", ["rule"])
ALERT_EVALUATIONS = Counter("finops_alert_evaluations", "Rule evaluations this process ran")

_FIRING = """
SELECT r.rule, count(a.id) FROM alert_rule r
LEFT JOIN alert a ON a.rule = r.rule AND a.status = 'firing'
GROUP BY r.rule
"""
# Served by the partial index node_energy_window_open (migration 0017).
_PENDING = "SELECT count(*) FROM node_energy_window WHERE NOT final"


def lag(
    assigned: Iterable[Any],
    highwater: Callable[[Any], int | None],
    applied: Mapping[str, Mapping[int, int]],
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> messages not applied yet, for every assigned
    partition whose end and applied offset are both known."""
    out: dict[tuple[str, int], int] = {}
    for tp in assigned:
        end, done = highwater(tp), applied.get(tp.topic, {}).get(tp.partition)
        if end is not None and done is not None:
            out[(tp.topic, tp.partition)] = max(0, end - done)
    return out


def attach(
    app: Any, sinks: list[OffsetSink], engine: Engine, faults: Callable[[], Mapping[str, int]]
) -> None:
    """The gauges' timers, on ``app``; ``faults`` the process's fault counts."""
    FAULTS.source = faults
    shown: set[tuple[str, int]] = set()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        consumer = app.consumer
        try:
            now = lag(
                consumer.assignment(),
                consumer.highwater,
                {s.topic: s.next_offsets for s in sinks},
            )
        except Exception:  # the consumer is not started, or is rebalancing
            return
        for topic, partition in shown - now.keys():
            live.LAG.remove(topic, str(partition))
        for (topic, partition), n in now.items():
            live.LAG.labels(topic, str(partition)).set(n)
        shown.clear()
        shown.update(now)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def read_gauges() -> None:
        try:
            await asyncio.to_thread(_read_gauges, engine)
        except Exception:
            log.warning("metrics: could not read the alert and energy gauges", exc_info=True)


def _read_gauges(engine: Engine) -> None:
    with engine.connect() as conn:
        ENERGY_PENDING.set(conn.execute(text(_PENDING)).scalar_one())
        for rule, n in conn.execute(text(_FIRING)):
            ALERTS_FIRING.labels(rule).set(n)
