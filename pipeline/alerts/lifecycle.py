"""The alert lifecycle. Pure.

``lifecycle`` turns the findings of one evaluation into alert transitions:
a new finding fires, a finding that keeps firing updates its numbers, a
firing alert whose rule no longer finds it resolves, and a re-fire within
the cooldown after the last notification is recorded but not re-notified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pipeline.alerts.rules import Finding


@dataclass(frozen=True)
class Alert:
    dedup_key: str
    status: Literal["firing", "resolved"]
    fired_at: datetime
    notified_at: datetime | None


@dataclass(frozen=True)
class Transition:
    kind: Literal["fire", "update", "resolve"]
    dedup_key: str
    finding: Finding | None  # None for a resolution
    notify: bool


def lifecycle(
    alerts: Mapping[str, Alert],
    findings: Iterable[Finding],
    evaluated: Sequence[str],
    now: datetime,
    cooldown: timedelta,
) -> list[Transition]:
    """Transitions for one evaluation of the rules named in ``evaluated``.

    A firing alert resolves only when its own rule was evaluated and did not
    find it again; a finding whose alert is resolved (or unknown) fires, and
    notifies unless the last notification was within ``cooldown`` (a
    flapping condition pages once, not every window)."""
    found = {f.dedup_key: f for f in findings}
    out = []
    for key, f in sorted(found.items()):
        alert = alerts.get(key)
        if alert is not None and alert.status == "firing":
            out.append(Transition("update", key, f, notify=False))
            continue
        quiet = (
            alert is not None
            and alert.notified_at is not None
            and (now - alert.notified_at < cooldown)
        )
        out.append(Transition("fire", key, f, notify=not quiet))
    rules = set(evaluated)
    for key, alert in sorted(alerts.items()):
        if alert.status == "firing" and key not in found and key.split(":", 1)[0] in rules:
            out.append(Transition("resolve", key, None, notify=True))
    return out
