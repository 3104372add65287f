"""Run one scenario end to end and return its verdict."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.testbed.chaos.harness import ChaosRun, Target
from pipeline.testbed.chaos.scenarios import JOINED, SCENARIOS, Intensity, simulated, simulated_side
from pipeline.testbed.chaos.verdict import Verdict, fault_lines, judge, judge_side


def run_scenario(
    target: Target,
    name: str,
    events: int,
    *,
    seed: int = 1,
    intensity: Intensity | None = None,
    workdir: Path | None = None,
    keep: bool = False,
    say: Callable[[str], None] = print,
    on_progress: Callable[[int, int], None] | None = None,
) -> Verdict:
    scenario = SCENARIOS[name]
    rng = random.Random(seed)
    lines = simulated(events, seed)
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"finops-chaos-{name}-"))
    joined = name in JOINED
    with ChaosRun(target, name, workdir, joined=joined, say=say) as run:
        say(f"chaos {name}: {len(lines)} events, database {run.db_name}, topic {run.topic}")
        if joined:
            # The telemetry and cache traffic of the same calls, all of it
            # waiting on its topics while the scenario's fault hits the drain.
            telemetry, cache = simulated_side(events, seed)
            run.produce_side(telemetry, cache)
            say(f"  with {len(telemetry)} GPU samples and {len(cache)} cache lines")
        scenario(run, lines, rng, intensity or Intensity())
        run.wait_drained(on_progress=on_progress)
        run.stop_all()
        verdict = judge(run)
        if joined:
            judge_side(run, verdict)
        verdict.faults = dict(fault_lines(run))
        verdict.restarts = run.restarts
        verdict.unclean_stops = list(run.unclean_stops)
        verdict.details.extend(run.unclean_stops)
        verdict.details.append(f"worker faults logged: {verdict.faults or 'none'}")
        verdict.details.append(f"workers started {len(run.workers)}, restarted {run.restarts}")
        verdict.details.append(f"logs in {workdir}")
    if verdict.ok and not keep:
        run.drop_database()
    return verdict
