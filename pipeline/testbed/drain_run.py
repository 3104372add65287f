"""One ``finops worker --drain`` measured, and what a bench measurement
needs around it: a fresh database, the topics a worker touches, the
worker's environment. Shared by ``finops bench`` and ``finops soak``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.progress import Progress, TaskID

from pipeline.embedded import runtime
from pipeline.embedded.endpoints import Endpoints
from pipeline.settings import Settings
from pipeline.storage import db
from pipeline.testbed.cpu import (
    RssSampler,
    peak_mb,
    postmaster_pid,
    second_half_growth_mb,
    tree_cpu_s,
)


@dataclass(frozen=True)
class Run:
    events: int
    seconds: float
    startup_s: float
    # The pipeline's agents: name -> the worker's StageClock fields (summed
    # over the workers).
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    # The pipeline's CPU seconds: "worker" (all of them), "postgres" and
    # "broker" (when embedded, so their processes are known).
    cpu: dict[str, float] = field(default_factory=dict)
    # The workers' resident memory, summed, sampled every 0.5 s.
    rss: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    @property
    def rss_peak_mb(self) -> float:
        return peak_mb(self.rss)

    @property
    def rss_growth_mb(self) -> float:
        """Over the second half of the drain."""
        return second_half_growth_mb(self.rss)


@contextmanager
def database(database_url: str, topic: str) -> Iterator[str]:
    """A fresh database for one measurement, migrated and with the default
    prices, dropped after."""
    from pipeline.spend.price_store import default_prices, load_entries

    name = f"finops_bench_{topic.removeprefix('bench-').replace('-', '_')}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = db.with_database(database_url, name)
        db.upgrade(url)
        engine = db.engine(url)
        try:
            load_entries(engine, default_prices(), "default")
        finally:
            engine.dispose()
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def topics_of(topic: str) -> list[str]:
    """Every topic a worker on usage topic ``topic`` reads or writes: its
    side topics even when its joins are off, and their dead letters."""
    topics = [topic, *(f"{topic}-{k}" for k in ("telemetry", "cache"))]
    return topics + [f"{t}-dlq" for t in topics]


def worker_env(
    settings: Settings, found: Endpoints, topic: str, database_url: str, joins: bool
) -> dict[str, str]:
    return {
        **os.environ,
        "FINOPS_KAFKA_URL": found.kafka_url,
        "FINOPS_DATABASE_URL": database_url,
        "FINOPS_USAGE_TOPIC": topic,
        "FINOPS_USAGE_DLQ_TOPIC": f"{topic}-dlq",
        "FINOPS_TELEMETRY_TOPIC": f"{topic}-telemetry",
        "FINOPS_CACHE_TOPIC": f"{topic}-cache",
        "FINOPS_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "FINOPS_PARTITIONS": str(settings.partitions),
        "FINOPS_JOINS": str(joins).lower(),
    }


def pipeline_drain(
    settings: Settings,
    found: Endpoints,
    topic: str,
    database_url: str,
    joins: bool,
    workers: int = 1,
) -> Run:
    """``workers`` ``finops worker --drain`` processes in one consumer group;
    each stops once every partition is applied, whoever applied it."""
    watched = _service_pids(settings) if found.embedded else {}
    with tempfile.TemporaryDirectory() as tmp:
        env = worker_env(settings, found, topic, database_url, joins)
        files = [Path(tmp) / f"stats-{i}.json" for i in range(workers)]
        before = {name: tree_cpu_s(pid) for name, pid in watched.items()}
        t0 = time.time()
        command = [sys.executable, "-m", "pipeline.cli", "worker", "--drain", "--stats-file"]
        procs = [subprocess.Popen([*command, str(f)], env=env) for f in files]
        rss = RssSampler([p.pid for p in procs])
        try:
            cpu = {"worker": sum(_wait(p) for p in procs)}
        finally:
            rss.stop()
        time.sleep(1.0)  # the workers' backends end after them; then they count
        for name, pid in watched.items():
            start, end = before[name], tree_cpu_s(pid)
            if start is not None and end is not None:
                cpu[name] = end - start
        stats = [json.loads(f.read_text()) for f in files]
    first = min(s["first_message_at"] for s in stats if s["first_message_at"] is not None)
    last = max(s["drained_at"] for s in stats)
    stages: dict[str, dict[str, float]] = {}
    for s in stats:
        for agent, clock in s["stages"].items():
            into = stages.setdefault(agent, {})
            for k, v in clock.items():
                if isinstance(v, int | float):
                    into[k] = into.get(k, 0) + v
    return Run(
        sum(s["accepted"] for s in stats),
        last - first,
        first - t0,
        stages,
        cpu,
        tuple(rss.samples),
    )


def _service_pids(settings: Settings) -> dict[str, int | None]:
    state = runtime.load_state(settings.home)
    pgdata = Path(state.pgdata) if state.pgdata else settings.home / "pgdata"
    return {"postgres": postmaster_pid(pgdata), "broker": state.broker_pid}


def _wait(proc: subprocess.Popen[bytes]) -> float:
    """Wait for a worker; its CPU seconds (it must exit 0)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args)
    return usage.ru_utime + usage.ru_stime


def advance(progress: Progress, task: TaskID, completed: int) -> None:
    progress.update(task, completed=completed)
