"""Energy attribution: measured GPU energy per node and minute, shared among
the attempts that node served in that minute. Pure: values in, values out.

Method (written down here and in docs/guides/energy-and-cache.md, next to the numbers):

1. Measured energy, per (node, GPU), in integer millijoules. Between two
   consecutive samples of one GPU the energy is the delta of the DCGM
   energy counter (``energy_mj``). If the counter went backwards (a driver
   reload resets it) or is missing, the interval's energy is the trapezoid
   of the two power readings, rounded half-even to the millijoule (the one
   rounding step). An interval longer than ``max_gap`` is not measured at
   all: its time is reported as unmeasured and the windows it touches are
   marked as having a gap.
2. An interval that spans a window boundary is split by time; the parts are
   floored and the leftover millijoules go to the last part, so the parts
   add up to the interval exactly.
3. Per (node, window), the GPUs' energy is summed. If the node served
   attempts in that window, all of it is attributed to them in proportion to
   their weight: decode (output) tokens weigh ``decode``, uncached prefill
   tokens ``prefill``, cached prefill tokens ``cached`` (defaults 100, 10, 1:
   a decoded token costs about ten prefilled ones, since decoding is
   memory-bound and runs one token per forward pass; a cached prefix token
   costs about a tenth of an uncached one), times a factor for the serving batch (``BATCH_FACTORS``:
   8 unbatched or unknown, 5 for 2-4, 3 for 5-16, 2 above: a forward pass
   serves the whole batch, so a token in a large batch costs about a quarter
   of an unbatched one). Shares are floored and the leftover millijoules go to
   the largest remainders (ties by attempt order), so attributed = measured
   exactly. A window with no attempts (or only zero-weight ones) is idle.

So for every node-window: attributed + idle = measured, to the millijoule.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

WINDOW = timedelta(minutes=1)
# Serving-batch buckets: (largest batch size, label); above the last, "65+".
BATCH_BUCKETS = ((1, "1"), (4, "2-4"), (16, "5-16"), (64, "17-64"))
BATCH_FACTORS = {"unknown": 8, "1": 8, "2-4": 5, "5-16": 3, "17-64": 2, "65+": 2}
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Sample:
    node_id: str
    gpu: str
    ts: datetime
    power_w: Decimal  # DCGM_FI_DEV_POWER_USAGE
    energy_mj: int | None  # DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, monotonic unless reset


@dataclass(frozen=True)
class Attempt:
    """What energy attribution needs of one usage event."""

    key: tuple[str, ...]  # the energy_window key without window and node (model, tenant, ...)
    node_id: str
    ts: datetime
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    batch_size: int | None = None


def batch_bucket(batch_size: int | None) -> str:
    if batch_size is None:
        return "unknown"
    for upper, label in BATCH_BUCKETS:
        if batch_size <= upper:
            return label
    return "65+"


@dataclass(frozen=True)
class Weights:
    decode: int = 100
    prefill: int = 10
    cached: int = 1

    def of(self, a: Attempt) -> int:
        uncached = a.input_tokens - a.cache_read_tokens
        tokens = (
            self.decode * a.output_tokens
            + self.prefill * uncached
            + self.cached * a.cache_read_tokens
        )
        return tokens * BATCH_FACTORS[batch_bucket(a.batch_size)]


@dataclass(frozen=True)
class NodeSplit:
    window_start: datetime
    node_id: str
    measured_mj: int
    attributed_mj: int
    idle_mj: int
    unmeasured_ms: int  # time not covered by any measured interval (gaps)

    @property
    def has_gap(self) -> bool:
        return self.unmeasured_ms > 0


@dataclass(frozen=True)
class EnergyShare:
    window_start: datetime
    node_id: str
    key: tuple[str, ...]
    attempts: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    energy_mj: int


@dataclass(frozen=True)
class Attribution:
    nodes: list[NodeSplit]
    shares: list[EnergyShare]


def window_of(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def _ms(delta: timedelta) -> int:
    return delta // _MS


def interval_energy(a: Sample, b: Sample) -> int:
    """Millijoules between two consecutive samples of one GPU."""
    if a.energy_mj is not None and b.energy_mj is not None and b.energy_mj >= a.energy_mj:
        return b.energy_mj - a.energy_mj
    # Counter reset or missing: integrate power (W x ms = mJ), trapezoid.
    mj = (a.power_w + b.power_w) * _ms(b.ts - a.ts) / 2
    return int(mj.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def split_by_window(start: datetime, end: datetime, total: int) -> list[tuple[datetime, int]]:
    """``total`` spread over the windows [start, end) touches, by time; the
    parts add up to ``total`` exactly (the last part takes the leftover)."""
    span = _ms(end - start)
    parts: list[tuple[datetime, int]] = []
    cursor = start
    given = 0
    while cursor < end:
        w = window_of(cursor)
        stop = min(end, w + WINDOW)
        part = total * _ms(stop - start) // span - given if span else 0
        parts.append((w, part))
        given += part
        cursor = stop
    if parts:
        w, last = parts[-1]
        parts[-1] = (w, last + total - given)
    return parts


def measure(
    samples: Iterable[Sample], max_gap: timedelta = timedelta(seconds=30)
) -> tuple[dict[tuple[datetime, str], int], dict[tuple[datetime, str], int]]:
    """(measured mJ, unmeasured ms) per (window, node)."""
    by_gpu: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        by_gpu[(s.node_id, s.gpu)].append(s)
    energy: dict[tuple[datetime, str], int] = defaultdict(int)
    unmeasured: dict[tuple[datetime, str], int] = defaultdict(int)
    for (node, _), series in by_gpu.items():
        # Samples arrive in any order and may repeat a timestamp: order them
        # fully, and of samples sharing a timestamp keep the last in that
        # order, so the result never depends on arrival order.
        series.sort(key=lambda s: (s.ts, -1 if s.energy_mj is None else s.energy_mj, s.power_w))
        series = [
            s for s, nxt in itertools.zip_longest(series, series[1:]) if not nxt or nxt.ts != s.ts
        ]
        for a, b in itertools.pairwise(series):
            if b.ts - a.ts > max_gap:
                for w, ms in split_by_window(a.ts, b.ts, _ms(b.ts - a.ts)):
                    unmeasured[(w, node)] += ms
                    energy[(w, node)] += 0  # the window exists, with a gap
                continue
            for w, mj in split_by_window(a.ts, b.ts, interval_energy(a, b)):
                energy[(w, node)] += mj
    return dict(energy), dict(unmeasured)


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights``, summing to
    ``total`` exactly; leftover units go to the largest remainders, ties to
    the earlier weight."""
    whole = sum(weights)
    if whole <= 0:
        raise ValueError("weights must have a positive sum")
    shares = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def attribute(
    samples: Iterable[Sample],
    attempts: Iterable[Attempt],
    weights: Weights = Weights(),
    max_gap: timedelta = timedelta(seconds=30),
) -> Attribution:
    """Measured energy per node-window, shared among that window's attempts."""
    energy, unmeasured = measure(samples, max_gap)
    served: dict[tuple[datetime, str], list[Attempt]] = defaultdict(list)
    for a in attempts:
        served[(window_of(a.ts), a.node_id)].append(a)
    nodes: list[NodeSplit] = []
    shares: list[EnergyShare] = []
    for w, node in sorted(energy):
        mj = energy[(w, node)]
        present = served.get((w, node), [])
        ws = [weights.of(a) for a in present]
        if not present or sum(ws) == 0:
            nodes.append(NodeSplit(w, node, mj, 0, mj, unmeasured.get((w, node), 0)))
            continue
        portions = largest_remainder(mj, ws)
        nodes.append(NodeSplit(w, node, mj, mj, 0, unmeasured.get((w, node), 0)))
        shares.extend(_group(w, node, present, portions))
    return Attribution(nodes, shares)


def _group(
    w: datetime, node: str, attempts: Sequence[Attempt], portions: Sequence[int]
) -> list[EnergyShare]:
    sums: dict[tuple[str, ...], list[int]] = {}
    for a, mj in zip(attempts, portions, strict=True):
        s = sums.setdefault(a.key, [0, 0, 0, 0, 0])
        s[0] += 1
        s[1] += a.input_tokens
        s[2] += a.output_tokens
        s[3] += a.cache_read_tokens
        s[4] += mj
    return [EnergyShare(w, node, key, *values) for key, values in sums.items()]
