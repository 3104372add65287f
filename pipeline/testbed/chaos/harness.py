"""One chaos run: a private database and topic, supervised worker processes,
traffic, and a verdict against the ledger recomputed from the same log.

Workers are real ``finops worker`` processes in one consumer group. The
harness plays the supervisor a deployment would have (systemd, Kubernetes):
a worker that exits on its own is restarted and the restart is reported.
Faults are the scenario's job (``pipeline.testbed.chaos.scenarios``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from pipeline.embedded import runtime as embedded
from pipeline.settings import Settings
from pipeline.spend.price_store import load_entries
from pipeline.spend.sink import SINK
from pipeline.storage import db
from pipeline.stream.kafka import committed_offsets, end_offsets, ensure_topics
from pipeline.stream.producer import BatchingPublisher

log = logging.getLogger(__name__)

# Tables whose whole content the replay checksum covers (bookkeeping columns aside).
CHECKSUM_TABLES = ("spend_window", "unpriced_event", "seen_event", "dead_letter", "sink_offset")
MAX_RESTARTS = 30  # a crash loop, not a fault being recovered from
READY = b"[^Worker]: Ready"  # faust's line once the first assignment is done
# Wall-clock columns, and the owner epoch, which every partition claim bumps.
_BOOKKEEPING_COLUMNS = ("updated_at", "received_at", "replayed_at", "owner_epoch")


@dataclass(frozen=True)
class Target:
    """Where to run: a broker, a PostgreSQL server, and, when the harness
    may fault them directly, the broker's pid and the cluster's data dir."""

    kafka_url: str
    server_url: str
    broker_pid: int | None = None
    pgdata: Path | None = None


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    expected_exit: bool = False


class ChaosRun:
    def __init__(
        self,
        target: Target,
        scenario: str,
        workdir: Path,
        *,
        partitions: int = 6,
        events_per_message: int = 100,
        joined: bool = False,
        say: Callable[[str], None] = print,
    ) -> None:
        self.target = target
        self.scenario = scenario
        self.joined = joined  # telemetry and cache traffic beside the usage
        self.side_lines: dict[str, list[bytes]] = {}
        self.workdir = workdir
        self.say = say
        run_id = uuid.uuid4().hex[:8]
        self.db_name = f"chaos_{scenario.replace('-', '_')}_{run_id}"
        self.topic = f"chaos-{scenario}-{run_id}"
        self.group = f"chaos-{run_id}"
        self.settings = Settings(
            partitions=partitions,
            usage_topic=self.topic,
            usage_dlq_topic=f"{self.topic}-dlq",
            telemetry_topic=f"{self.topic}-telemetry",
            cache_topic=f"{self.topic}-cache",
            group_id=self.group,
            events_per_message=events_per_message,
            home=workdir / "home",
        )
        self.database_url = db.with_database(target.server_url, self.db_name)
        self.workers: list[Worker] = []
        self.restarts = 0
        self.unclean_stops: list[str] = []
        self.produced_lines = 0
        self._serial = 0
        self._lock = threading.Lock()
        self._supervising = False
        self._supervisor: threading.Thread | None = None

    # --- set-up and tear-down ----------------------------------------------

    def __enter__(self) -> ChaosRun:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(self.target.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        db.upgrade(self.database_url)
        from pipeline.spend.price_store import default_prices

        engine = db.engine(self.database_url)
        load_entries(engine, default_prices(), "default")
        engine.dispose()
        asyncio.run(
            ensure_topics(
                self.target.kafka_url,
                [self.topic, self.settings.usage_dlq_topic, *self.settings.side_topics],
                self.settings.partitions,
            )
        )
        self._supervising = True
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._supervising = False
        self.stop_all()

    def drop_database(self) -> None:
        with psycopg.connect(self.target.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        s = self.settings
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")},
            "FINOPS_KAFKA_URL": self.target.kafka_url,
            "FINOPS_DATABASE_URL": self.database_url,
            "FINOPS_USAGE_TOPIC": s.usage_topic,
            "FINOPS_USAGE_DLQ_TOPIC": s.usage_dlq_topic,
            "FINOPS_TELEMETRY_TOPIC": s.telemetry_topic,
            "FINOPS_CACHE_TOPIC": s.cache_topic,
            "FINOPS_GROUP_ID": s.group_id,
            "FINOPS_PARTITIONS": str(s.partitions),
            "FINOPS_HOME": str(s.home),
            **(extra or {}),
        }

    # --- workers -------------------------------------------------------------

    def start_worker(self, extra: dict[str, str] | None = None) -> Worker:
        with self._lock:
            self._serial += 1
            name = f"w{self._serial}"
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker", "--log-level", "info"],
                env=self.env(extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        worker = Worker(name, proc, log_path)
        with self._lock:
            self.workers.append(worker)
        return worker

    def wait_ready(self, *workers: Worker, timeout_s: float = 120) -> None:
        """Until each worker has joined the group (faust logs that it is
        ready), so a scenario's stop is a member leaving, not a process that
        never joined; a loaded machine can take many seconds to get there."""
        deadline = time.monotonic() + timeout_s
        for w in workers:
            while w.proc.poll() is None and READY not in w.log_path.read_bytes():
                if time.monotonic() > deadline:
                    self.say(f"  {w.name} not ready after {timeout_s:.0f}s")
                    return
                time.sleep(0.2)

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def signal(self, worker: Worker, sig: signal.Signals) -> None:
        if sig in (signal.SIGKILL, signal.SIGTERM):
            worker.expected_exit = True
        if worker.proc.poll() is None:
            worker.proc.send_signal(sig)

    def stop(self, worker: Worker, timeout: float = 30) -> int | None:
        """Graceful stop (SIGTERM); one that fails or hangs is recorded."""
        if worker.proc.poll() is not None:
            return worker.proc.returncode
        self.signal(worker, signal.SIGTERM)
        try:
            code = worker.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(worker, signal.SIGKILL)
            self.unclean_stops.append(f"{worker.name} ignored SIGTERM for {timeout:.0f}s")
            return worker.proc.wait(10)
        if code != 0:
            self.unclean_stops.append(f"{worker.name} exited {code} on SIGTERM")
        return code

    def stop_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                with suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGCONT)
                self.stop(w)

    def _supervise(self) -> None:
        """Restart workers that exited without being told to (as a process
        supervisor would), so a crash costs time, never data."""
        while self._supervising:
            time.sleep(0.5)
            for w in list(self.workers):
                code = w.proc.poll()
                if code is not None and not w.expected_exit and self._supervising:
                    w.expected_exit = True
                    self.restarts += 1
                    self.say(f"  {w.name} exited with {code}; restarting it (see {w.log_path})")
                    if self.restarts > MAX_RESTARTS:
                        self.say(f"  more than {MAX_RESTARTS} restarts: giving up")
                        self._supervising = False
                        return
                    self.start_worker()

    # --- traffic -------------------------------------------------------------

    def produce_side(self, telemetry: Sequence[bytes], cache: Sequence[bytes]) -> None:
        """The telemetry and cache traffic of the run, on their topics."""
        for topic, lines in ((self.settings.telemetry_topic, telemetry),
                             (self.settings.cache_topic, cache)):  # fmt: skip
            self.produce(lines, topic=topic)
            self.side_lines.setdefault(topic, []).extend(lines)

    def produce(
        self,
        lines: Sequence[bytes],
        events_per_message: int | None = None,
        topic: str | None = None,
    ) -> None:
        publisher = BatchingPublisher(
            self.target.kafka_url,
            topic or self.topic,
            events_per_message=events_per_message or self.settings.events_per_message,
            max_message_bytes=self.settings.max_message_bytes * 2,
            compression=self.settings.kafka_compression,
        )
        asyncio.run(publisher.publish(lines))
        if topic is None:
            with self._lock:
                self.produced_lines += len(lines)

    @staticmethod
    def spread(lines: Sequence[bytes], chunks: int) -> Iterator[Sequence[bytes]]:
        size = max(1, -(-len(lines) // chunks))
        for i in range(0, len(lines), size):
            yield lines[i : i + size]

    def produce_in_background(self, lines: Sequence[bytes], over_s: float) -> threading.Thread:
        """Publish ``lines`` in about 20 parts spread over ``over_s`` seconds,
        so faults happen while traffic flows."""
        parts = list(self.spread(lines, 20))

        def run() -> None:
            for part in parts:
                self.produce(part)
                time.sleep(over_s / len(parts))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    # --- progress ------------------------------------------------------------

    def applied(self, sink: str = SINK, topic: str | None = None) -> dict[int, int]:
        rows = self.query(
            "SELECT partition, next_offset FROM sink_offset WHERE sink = %s AND topic = %s",
            (sink, topic or self.topic),
        )
        return {int(p): int(o) for p, o in rows}

    def _watched(self) -> list[tuple[str, str]]:
        """(sink, topic) of every topic the run sends to."""
        s = self.settings
        side = [("telemetry", s.telemetry_topic), ("cache", s.cache_topic)]
        return [(SINK, self.topic), *(side if self.joined else [])]

    def wait_drained(
        self, timeout_s: float = 900, on_progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Until the sinks have applied every message of the run's topics."""
        ends = {t: asyncio.run(end_offsets(self.target.kafka_url, t)) for _, t in self._watched()}
        total = sum(sum(e.values()) for e in ends.values())
        deadline = time.monotonic() + timeout_s
        while True:
            with suppress(psycopg.Error):
                done = {t: self.applied(sink, t) for sink, t in self._watched()}
                if on_progress:
                    on_progress(
                        sum(min(done[t].get(p, 0), e) for t in ends for p, e in ends[t].items()),
                        total,
                    )
                if all(done[t].get(p, 0) >= e for t in ends for p, e in ends[t].items()):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained within {timeout_s}s: {ends}")
            if not self.alive():
                if not self._supervising:
                    raise RuntimeError(
                        "workers keep crashing; see their logs in " + str(self.workdir)
                    )
                self.start_worker()
            time.sleep(0.5)

    def wait_committed(self, timeout_s: float = 600) -> None:
        """Until the consumer group has committed every message of the topic:
        a re-read that the sink skips moves no sink offset, so the group's own
        offsets tell when it is done."""
        ends = asyncio.run(end_offsets(self.target.kafka_url, self.topic))
        deadline = time.monotonic() + timeout_s
        while True:
            done = asyncio.run(
                committed_offsets(self.target.kafka_url, self.settings.group_id, self.topic)
            )
            if all(done.get(p, 0) >= end for p, end in ends.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"group not at the end within {timeout_s}s: {done} vs {ends}")
            time.sleep(1)

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """A query that waits out a database restart or killed connection."""
        deadline = time.monotonic() + 120
        while True:
            try:
                with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                    return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    # --- verdict -------------------------------------------------------------

    def checksum(self, tables: Sequence[str] = CHECKSUM_TABLES) -> dict[str, str]:
        out = {}
        for table in tables:
            cols = [
                r[0]
                for r in self.query(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = %s AND column_name <> ALL(%s) ORDER BY ordinal_position",
                    (table, list(_BOOKKEEPING_COLUMNS)),
                )
                if r[0] != "id"
            ]
            row_text = "concat_ws('|', " + ", ".join(f'"{c}"::text' for c in cols) + ")"
            ((digest,),) = self.query(
                f"SELECT md5(coalesce(string_agg({row_text}, E'\\n' ORDER BY {row_text}), ''))"
                f" FROM {table}"
            )
            out[table] = digest
        return out


def embedded_target(home: Path) -> Target:
    started = embedded.up(home)
    state = embedded.load_state(home)
    return Target(
        kafka_url=started.kafka_url,
        server_url=started.database_url,
        broker_pid=state.broker_pid,
        pgdata=Path(state.pgdata) if state.pgdata else None,
    )
