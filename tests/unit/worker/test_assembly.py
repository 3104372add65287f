"""The worker's parts as assembled, without starting them: every sink and
the finalizer report their faults into the stats file's counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pipeline.cache.sink import CacheSink
from pipeline.energy.finalizer import EnergyFinalizer
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.settings import Settings
from pipeline.spend.reference import ReferenceReader
from pipeline.spend.sink import SpendSink
from pipeline.worker.assembly import assemble


def test_the_stats_count_the_faults_of_every_sink_and_the_finalizer(tmp_path: Path) -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())  # faust wants one to exist
    parts = assemble(
        Settings(home=tmp_path), "kafka://127.0.0.1:9", "postgresql://nobody@127.0.0.1:9/none"
    )
    kinds = {type(s) for s in parts.sessions}
    assert kinds == {SpendSink, ReferenceReader, TelemetrySink, CacheSink, EnergyFinalizer}
    for n, session in enumerate(parts.sessions, 1):
        session.faults["sink_error"] += n
    assert parts.faults == {"sink_error": sum(range(1, len(parts.sessions) + 1))}
    # Each joined topic's sink publishes its dead letters to its own topic.
    assert [s.topic for s in parts.sinks] == ["usage", "gpu-telemetry", "cache-events"]
