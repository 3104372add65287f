"""The worker's own counters, written to ``--stats-file`` when it stops (the
bench and the tests read them)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from pipeline.stream.stages import StageClock


@dataclass
class AgentStats:
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    conflicts: int = 0
    fenced_batches: int = 0
    batches: int = 0
    first_message_at: float | None = None
    last_commit_at: float | None = None
    drained_at: float | None = None  # --drain: every joined topic applied and split
    started_at: float = field(default_factory=time.time)
    # Per agent (spend, telemetry, cache): how busy its stages were.
    stages: dict[str, StageClock] = field(default_factory=dict)


def stats_json(stats: AgentStats, faults: Mapping[str, int]) -> str:
    """The worker's counters, and the faults it met by kind (see ``fault`` log lines)."""
    return json.dumps({**asdict(stats), "faults": dict(faults)})
