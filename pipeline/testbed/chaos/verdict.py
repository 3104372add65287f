"""A chaos run's verdict: every table the spend sink writes against the
ledger recomputed from the log, the ingest balance, canaries searched for
everywhere, and for a joined run energy and cache windows against a
reference computed from the same lines with no fault at all."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from models.contracts import GpuTelemetrySample
from pipeline.cache.codec import CACHE
from pipeline.cache.windows import window_frames
from pipeline.energy.attribution import Sample, measure
from pipeline.energy.finalizer import EnergyFinalizer
from pipeline.spend.ledger import category
from pipeline.spend.reconcile import reconcile_ledger
from pipeline.stream.kafka import read_topic
from pipeline.stream.message import Message
from pipeline.stream.ndjson import decode_lines
from pipeline.testbed.chaos.harness import ChaosRun
from pipeline.testbed.chaos.poison import CANARIES


@dataclass
class Verdict:
    scenario: str
    produced: int
    counted: int
    dead_lettered: int
    duplicates: int
    lost: int
    double_counted: int
    tables_equal: bool
    balanced: bool  # accepted + duplicates + dead-lettered = produced, per the sink
    leaks: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)  # logged by the workers
    restarts: int = 0  # workers that died on their own and were restarted
    unclean_stops: list[str] = field(default_factory=list)  # SIGTERM that did not exit 0
    # Joined runs only: energy conserved and measured as a fault-free
    # reference measures it, cache windows equal to the reference's.
    energy_ok: bool | None = None
    cache_ok: bool | None = None

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.double_counted == 0
            and self.tables_equal
            and self.balanced
            and not self.leaks
            and self.energy_ok is not False
            and self.cache_ok is not False
        )

    def line(self) -> str:
        return (
            f"verdict: {'PASS' if self.ok else 'FAIL'} scenario={self.scenario}"
            f" produced={self.produced} counted={self.counted}"
            f" dead_lettered={self.dead_lettered} duplicates={self.duplicates}"
            f" lost={self.lost} double_counted={self.double_counted}"
            f" tables_equal={'yes' if self.tables_equal else 'no'}"
            f" balanced={'yes' if self.balanced else 'no'}"
            f" leaks={len(self.leaks)}"
            + "".join(
                f" {name}={'yes' if value else 'no'}"
                for name, value in (("energy", self.energy_ok), ("cache", self.cache_ok))
                if value is not None
            )
        )


def judge(run: ChaosRun) -> Verdict:
    """The run's verdict: the sink's tables against the ledger recomputed
    from the log, the balance and canaries."""
    rec = reconcile_ledger(
        run.target.kafka_url,
        run.database_url,
        run.topic,
        run.settings.admission(datetime.now(UTC)),
    )
    want, diffs = rec.ledger, rec.diffs
    accepted = rec.counters.accepted
    duplicates = rec.counters.duplicates
    dead = rec.counters.dead_lettered
    dead_rows = run.query('SELECT partition, "offset", line, reason FROM dead_letter')
    dead_positions = {(int(p), int(o), int(n)) for p, o, n, _ in dead_rows}
    dead_reasons = Counter(category(r) for *_, r in dead_rows)
    keys = {r[0].hex for r in run.query("SELECT event_key FROM seen_event")}
    details = [f"{d.key} {d.column}: ledger {d.expected}, table {d.stored}" for d in diffs[:5]]
    if dead_positions != want.dead_positions:
        details.append(
            f"dead letters differ: {len(dead_positions - want.dead_positions)} extra,"
            f" {len(want.dead_positions - dead_positions)} missing"
        )
    if dead_reasons != want.dead:
        details.append(f"dead-letter reasons {dict(dead_reasons)} != ledger {dict(want.dead)}")
    if keys != want.event_keys:
        details.append(f"seen_event holds {len(keys)} keys, ledger {len(want.event_keys)}")
    tables_equal = (
        not diffs
        and dead_positions == want.dead_positions
        and dead_reasons == want.dead
        and keys == want.event_keys
    )
    balanced = rec.balanced and accepted + duplicates + dead == want.produced
    if not balanced:
        details.append(
            f"sink counters accepted={accepted} duplicates={duplicates} dead={dead};"
            f" ledger {want.counted}/{want.duplicates}/{want.dead_lettered}"
            f" of {want.produced}"
        )
    if want.produced != run.produced_lines:
        details.append(f"the log holds {want.produced} lines, {run.produced_lines} sent")
    return Verdict(
        scenario=run.scenario,
        produced=want.produced,
        counted=accepted,
        dead_lettered=dead,
        duplicates=duplicates,
        lost=rec.lost,
        double_counted=rec.double_counted,
        tables_equal=tables_equal,
        balanced=balanced,
        leaks=leaks(run),
        details=details,
    )


def judge_side(run: ChaosRun, verdict: Verdict) -> None:
    """For a joined run: split every window, then hold energy and cache
    windows to a reference computed from the same lines with no fault."""
    finalizer = EnergyFinalizer(run.database_url, timedelta(0))

    async def split() -> bool:
        try:
            return await finalizer.split_all(stall_s=120)
        finally:
            await finalizer.close()

    asyncio.run(split())
    verdict.energy_ok = _energy_ok(run, verdict.details)
    verdict.cache_ok = _cache_ok(run, verdict.details)


def _side_messages(run: ChaosRun, topic: str) -> list[Message]:
    return [Message(0, i, line) for i, line in enumerate(run.side_lines.get(topic, []))]


def _energy_ok(run: ChaosRun, details: list[str]) -> bool:
    samples, dead = decode_lines(
        GpuTelemetrySample, _side_messages(run, run.settings.telemetry_topic)
    )
    measured, unmeasured = measure(
        Sample(v.node_id, v.gpu, v.ts, Decimal(repr(v.power_w)), v.energy_mj)
        for v in (s.value for s in samples)
    )
    rows = run.query(
        "SELECT window_start, node_id, measured_mj, unmeasured_ms, attributed_mj, idle_mj,"
        " final FROM node_energy_window"
    )
    stored = {(w, n): (int(m), int(u)) for w, n, m, u, *_ in rows}
    want = {k: (mj, unmeasured.get(k, 0)) for k, mj in measured.items()}
    problems = []
    if dead:
        problems.append(f"{len(dead)} reference samples invalid")
    if stored != want:
        wrong = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
        problems.append(f"measured energy differs in {len(wrong)} node-windows: {wrong[:3]}")
    unsplit = [(w, n) for w, n, m, _, a, i, final in rows if not final or a + i != m]
    if unsplit:
        problems.append(f"{len(unsplit)} node-windows not split exactly (attributed + idle)")
    ((shares, attributed),) = run.query(
        "SELECT (SELECT coalesce(sum(energy_mj), 0) FROM energy_window"
        " WHERE source = 'measured'), (SELECT coalesce(sum(attributed_mj), 0)"
        " FROM node_energy_window)"
    )
    if shares != attributed:
        problems.append(f"attributed {attributed} mJ, shares {shares} mJ")
    details.extend(f"energy: {p}" for p in problems)
    return not problems


def _cache_ok(run: ChaosRun, details: list[str]) -> bool:
    events = CACHE.decode(_side_messages(run, run.settings.cache_topic)).events
    windows, evictions = window_frames(events)
    problems = []
    for table, frame in (("cache_window", windows), ("cache_eviction_window", evictions)):
        cols = list(frame.columns)
        stored = run.query(f"SELECT {', '.join(cols)} FROM {table}")
        have = sorted(tuple(r) for r in stored)
        want = sorted(frame.rows())
        if have != want:
            problems.append(f"{table}: {len(have)} rows stored, {len(want)} in the reference")
    details.extend(f"cache: {p}" for p in problems)
    return not problems


def leaks(run: ChaosRun) -> list[str]:
    """Where a canary (prompt text, API key) turned up: tables, logs, DLQ."""
    found = []
    tables = [
        r[0]
        for r in run.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    ]
    for canary in CANARIES:
        for table in tables:
            ((n,),) = run.query(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s',
                (f"%{canary}%",),
            )
            if n:
                found.append(f"table {table}")
        ((n,),) = run.query(
            "SELECT count(*) FROM dead_letter WHERE position(%s::bytea in raw) > 0",
            (canary.encode(),),
        )
        if n:
            found.append("dead_letter.raw")
        for w in run.workers:
            if canary.encode() in w.log_path.read_bytes():
                found.append(f"log {w.log_path.name}")
    dlq = asyncio.run(read_topic(run.target.kafka_url, run.settings.usage_dlq_topic))
    for m in dlq:
        if any(c.encode() in m.value for c in CANARIES):
            found.append(f"dlq topic offset {m.partition}/{m.offset}")
    return found


def fault_lines(run: ChaosRun) -> Counter[str]:
    """Faults the workers logged, by kind ("fault <kind>: ...")."""
    kinds: Counter[str] = Counter()
    for w in run.workers:
        for line in w.log_path.read_text(errors="replace").splitlines():
            _, sep, rest = line.partition("fault ")
            if sep:
                kinds[rest.split(" ", 1)[0].rstrip(":")] += 1
    return kinds
