"""GPU telemetry into measured node energy, exactly once.

In one transaction per batch: the last stored sample of each GPU in the
batch is locked, the new samples (newer than it) extend the series, the
intervals between consecutive samples become millijoules per node-window
(``pipeline.energy.attribution.measure``: counter deltas, power on reset or missing
counter, gaps unmeasured) added to ``node_energy_window``, and the newest
sample is stored for the next batch. A sample older than the stored one
cannot form an interval any more: it is dead-lettered, never silently
dropped. A node-window that gains energy is re-opened for the finalizer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, timedelta
from decimal import Decimal

from models.contracts import GpuTelemetrySample
from pipeline.energy.attribution import Sample, measure
from pipeline.storage import partitions
from pipeline.stream.dead_letter import DeadLetter, PublishDead, table_only
from pipeline.stream.line_sink import LineSink
from pipeline.stream.message import Message, Position
from pipeline.stream.ndjson import ValidLine, decode_lines
from pipeline.stream.pg import Conn

SINK = "telemetry"
_OUT_OF_ORDER = "telemetry_out_of_order: not newer than the GPU's last stored sample"

_ADD_ENERGY = """
INSERT INTO node_energy_window (window_start, node_id, measured_mj, unmeasured_ms)
VALUES (%s, %s, %s, %s)
ON CONFLICT (window_start, node_id) DO UPDATE SET
    measured_mj = node_energy_window.measured_mj + excluded.measured_mj,
    unmeasured_ms = node_energy_window.unmeasured_ms + excluded.unmeasured_ms,
    final = false
"""
_STORE_LAST = """
INSERT INTO gpu_last_sample (node_id, gpu, ts, power_w, energy_mj) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (node_id, gpu) DO UPDATE SET
    ts = excluded.ts, power_w = excluded.power_w, energy_mj = excluded.energy_mj
"""


Decoded = tuple[list[ValidLine[GpuTelemetrySample]], list[DeadLetter]]


class TelemetrySink(LineSink[Decoded]):
    def __init__(
        self,
        database_url: str,
        topic: str,
        *,
        max_gap: timedelta = timedelta(seconds=30),
        publish_dead: PublishDead = table_only,
    ) -> None:
        super().__init__(database_url, topic, SINK, publish_dead)
        self._max_gap = max_gap
        self._partitions = partitions.Made()

    def prepare(self, messages: Sequence[Message]) -> Decoded:
        return decode_lines(GpuTelemetrySample, messages)

    async def before_commit(self, batch: Decoded) -> None:
        # A measured interval starts at the GPU's last sample, whose month
        # was made when that sample came.
        days = {line.value.ts.astimezone(UTC).date() for line in batch[0]}
        await self._partitions.ensure(days, self.create_each)

    def lines_of(self, batch: Decoded) -> list[Position]:
        return [(v.partition, v.offset, v.line) for v in batch[0]]

    def without(self, batch: Decoded, lines: Collection[Position]) -> Decoded:
        gone = set(lines)
        return [v for v in batch[0] if (v.partition, v.offset, v.line) not in gone], batch[1]

    async def write(self, conn: Conn, batch: Decoded) -> tuple[Counter[int], list[DeadLetter]]:
        # A copy: out-of-order samples are added to it below, and a retried
        # transaction writes the same prepared batch again.
        decoded, dead = batch[0], list(batch[1])
        series: dict[tuple[str, str], list[tuple[ValidLine[GpuTelemetrySample], Sample]]] = (
            defaultdict(list)
        )
        for line in decoded:
            s = line.value
            sample = Sample(s.node_id, s.gpu, s.ts, Decimal(repr(s.power_w)), s.energy_mj)
            series[(s.node_id, s.gpu)].append((line, sample))
        accepted: Counter[int] = Counter()
        usable: list[Sample] = []
        newest: dict[tuple[str, str], Sample] = {}
        async with conn.cursor() as cur:
            for (node, gpu), items in sorted(series.items()):
                await cur.execute(
                    "SELECT ts, power_w, energy_mj FROM gpu_last_sample"
                    " WHERE node_id = %s AND gpu = %s FOR UPDATE",
                    (node, gpu),
                )
                row = await cur.fetchone()
                last = Sample(node, gpu, row[0], row[1], row[2]) if row else None  # type: ignore[arg-type]
                if last is not None:
                    usable.append(last)
                for line, sample in sorted(items, key=lambda x: x[1].ts):
                    if last is not None and sample.ts <= last.ts:
                        dead.append(line.rejected(_OUT_OF_ORDER))
                        continue
                    usable.append(sample)
                    accepted[line.partition] += 1
                    newest[(node, gpu)] = sample
                    last = sample
            energy, unmeasured = measure(usable, self._max_gap)
            await cur.executemany(
                _ADD_ENERGY,
                [(w, n, mj, unmeasured.get((w, n), 0)) for (w, n), mj in sorted(energy.items())],
            )
            await cur.executemany(
                _STORE_LAST,
                [(s.node_id, s.gpu, s.ts, s.power_w, s.energy_mj) for s in newest.values()],
            )
        return accepted, dead
