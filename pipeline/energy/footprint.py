"""Operational and embodied carbon of energy windows, and the SCI. Pure.

The method is :data:`METHOD`, which ``finops energy --method`` prints next
to the numbers. Grams are measurements, not money: they are computed with
40 significant digits and rounded only for display.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Final

from models.carbon import CarbonBook

METHOD: Final = """\
- Operational carbon O = E x I: the energy of each 1-minute window (kWh) times
  the location-based grid intensity (gCO2e/kWh) of its site's region in force
  at the window's start. Measured energy is located by its serving node,
  estimated energy (external APIs) by its model.
- Embodied carbon M: a GPU's manufacturing emissions amortized evenly over
  its lifetime hours. A measured node-window reserves all its GPUs for the
  minute, M = gpus x g/GPU-hour / 60, shared like the energy: each attempt
  group gets its energy / the node's measured energy, the rest is idle (a
  window not yet split is all idle until it is). An
  estimated call occupies E / TDP GPU-hours of its site's GPU type (a lower
  bound: a GPU draws less than its TDP).
- SCI per 1,000 tokens = (O + M) / R, R = tokens / 1000, per group, for the
  attempts' share (Green Software Foundation SCI, functional unit 1k tokens).
  Idle energy and idle embodied carbon are a shared line; the fleet SCI
  includes them.
- Energy with no site or no intensity in force is counted as unlocated and
  given no carbon, never guessed.
- The reference data are versioned: `finops carbon load` adds grid-intensity
  versions by effective date and never rewrites one.
"""
MJ_PER_KWH: Final = Decimal(3_600_000_000)
GRAMS: Final = Context(prec=40, rounding=ROUND_HALF_EVEN)
ZERO: Final = Decimal(0)


@dataclass(frozen=True)
class EnergyCell:
    """Energy-window sums at the grain carbon needs: a window, a node, a
    model and a source, plus the report's grouping key."""

    window_start: datetime
    node_id: str
    model: str
    source: str  # measured | estimated
    key: tuple[str, ...]
    tokens: int
    energy_mj: int


@dataclass(frozen=True)
class NodeEnergy:
    window_start: datetime
    node_id: str
    measured_mj: int
    attributed_mj: int
    gpus: int

    @property
    def unattributed_mj(self) -> int:
        """Idle energy, or all of it while the window is not yet split."""
        return self.measured_mj - self.attributed_mj


@dataclass
class Footprint:
    tokens: int = 0
    energy_mj: int = 0
    operational_g: Decimal = ZERO
    embodied_g: Decimal = ZERO
    unlocated_mj: int = 0  # no site or no intensity in force: no carbon
    no_embodied_mj: int = 0  # located, but its GPU type has no embodied figure

    @property
    def carbon_g(self) -> Decimal:
        with localcontext(GRAMS):
            return self.operational_g + self.embodied_g

    @property
    def sci_per_1k_tokens(self) -> Decimal | None:
        """(E*I + M) / R, R = tokens / 1000."""
        if not self.tokens:
            return None
        with localcontext(GRAMS):
            return self.carbon_g * 1000 / self.tokens

    def add(self, other: Footprint) -> None:
        with localcontext(GRAMS):
            self.tokens += other.tokens
            self.energy_mj += other.energy_mj
            self.operational_g += other.operational_g
            self.embodied_g += other.embodied_g
            self.unlocated_mj += other.unlocated_mj
            self.no_embodied_mj += other.no_embodied_mj


@dataclass(frozen=True)
class Carbon:
    groups: dict[tuple[str, ...], Footprint]  # key + (source,)
    idle: Footprint

    @property
    def fleet(self) -> Footprint:
        total = Footprint()
        for f in (*self.groups.values(), self.idle):
            total.add(f)
        return total


def _operational(book: CarbonBook, region: str, at: datetime, energy_mj: int) -> Decimal | None:
    intensity = book.intensity_at(region, at)
    return None if intensity is None else energy_mj * intensity / MJ_PER_KWH


UNLOCATED: Final = "unlocated"


def footprint(
    cells: Iterable[EnergyCell],
    nodes: Iterable[NodeEnergy],
    book: CarbonBook,
    *,
    by_region: bool = False,
) -> Carbon:
    """Per group (each cell's key, then its site's region if ``by_region``,
    then its source) and the idle line."""
    with localcontext(GRAMS):  # every sum, not only each product
        return _footprint(cells, nodes, book, by_region)


def _footprint(
    cells: Iterable[EnergyCell], nodes: Iterable[NodeEnergy], book: CarbonBook, by_region: bool
) -> Carbon:
    node_index = {(n.window_start, n.node_id): n for n in nodes}
    groups: dict[tuple[str, ...], Footprint] = defaultdict(Footprint)
    for c in cells:
        measured = c.source == "measured"
        site = book.site("node", c.node_id) if measured else book.site("model", c.model)
        region = (site.region if site else UNLOCATED,) if by_region else ()
        f = groups[(*c.key, *region, c.source)]
        f.tokens += c.tokens
        f.energy_mj += c.energy_mj
        op = _operational(book, site.region, c.window_start, c.energy_mj) if site else None
        if op is None or site is None:
            f.unlocated_mj += c.energy_mj
            continue
        f.operational_g += op
        gpu = book.gpu(site.gpu_type)
        node = node_index.get((c.window_start, c.node_id))
        if gpu is None or (measured and node is None):
            f.no_embodied_mj += c.energy_mj
            continue
        if node is not None and measured:
            if node.measured_mj:
                whole = node.gpus * gpu.grams_per_gpu_hour / 60
                f.embodied_g += whole * c.energy_mj / node.measured_mj
        else:
            gpu_hours = Decimal(c.energy_mj) / MJ_PER_KWH / (Decimal(gpu.tdp_w) / 1000)
            f.embodied_g += gpu_hours * gpu.grams_per_gpu_hour
    return Carbon(dict(groups), _idle(node_index.values(), book))


def _idle(nodes: Iterable[NodeEnergy], book: CarbonBook) -> Footprint:
    """The shared line: each node-window's unattributed energy (idle, or all
    of it until the window is split), its carbon, and the same share of the
    embodied carbon of the node's GPUs for the minute. So the groups and this
    line always add up to the whole fleet, split or not."""
    idle = Footprint()
    for n in nodes:
        rest = n.unattributed_mj
        idle.energy_mj += rest
        site = book.site("node", n.node_id)
        op = _operational(book, site.region, n.window_start, rest) if site else None
        if op is None or site is None:
            idle.unlocated_mj += rest
            continue
        idle.operational_g += op
        gpu = book.gpu(site.gpu_type)
        if gpu is None:
            idle.no_embodied_mj += rest
            continue
        whole = n.gpus * gpu.grams_per_gpu_hour / 60
        # A minute with no measured energy (a telemetry gap) is all idle.
        idle.embodied_g += whole * rest / n.measured_mj if n.measured_mj else whole
    return idle
