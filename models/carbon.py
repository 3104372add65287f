"""Carbon reference data and its parsers: grid intensity per region with
effective dates (versioned like prices: a version is never rewritten),
embodied emissions per GPU type, and the sites that say where energy is
drawn. Parsers take text, not paths.

A site maps serving nodes (``kind=node``, a glob on ``node_id``, for
measured energy) or external API models (``kind=model``, a glob on the
model name, for estimated energy) to a grid region and a GPU type. The most
specific matching pattern wins (fewest wildcards, then longest).
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Annotated, Final, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, pattern=r"\S")]
Grams = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, decimal_places=3)]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridIntensity(_Entry):
    """Location-based grid carbon intensity of a region from ``effective_from``."""

    region: Name
    effective_from: AwareDatetime
    gco2e_per_kwh: Grams
    source: Name


class GpuEmbodied(_Entry):
    """Embodied (manufacturing) emissions of one GPU with its share of the
    server, amortized evenly over ``lifetime_hours``; ``tdp_w`` converts
    estimated energy into GPU-hours for calls on external hardware."""

    gpu_type: Name
    embodied_kgco2e: Grams
    lifetime_hours: Annotated[int, Field(gt=0)]
    tdp_w: Annotated[int, Field(gt=0)]
    source: Name

    @property
    def grams_per_gpu_hour(self) -> Decimal:
        return self.embodied_kgco2e * 1000 / self.lifetime_hours


class Site(_Entry):
    kind: Literal["node", "model"]
    pattern: Name
    region: Name
    gpu_type: Name


HEADERS: Final = {
    GridIntensity: "region,effective_from,gco2e_per_kwh,source",
    GpuEmbodied: "gpu_type,embodied_kgco2e,lifetime_hours,tdp_w,source",
    Site: "kind,pattern,region,gpu_type",
}

E = TypeVar("E", GridIntensity, GpuEmbodied, Site)


def parse_csv(kind: type[E], text: str) -> list[E]:
    """Rows of one of the three tables; the header must be exactly HEADERS[kind]."""
    header = HEADERS[kind]
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != header.split(","):
        raise ValueError(f"{kind.__name__} CSV header must be exactly: {header}")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            rows.append(kind.model_validate({k.strip(): v.strip() for k, v in row.items()}))
        except ValueError as exc:
            raise ValueError(f"{kind.__name__} CSV line {line}: {exc}") from exc
    return rows


def _specificity(pattern: str) -> tuple[int, int]:
    wildcards = sum(pattern.count(c) for c in "*?[")
    return (-wildcards, len(pattern))


@dataclass(frozen=True)
class CarbonBook:
    """An immutable snapshot of the carbon tables, with as-of lookups."""

    intensities: tuple[GridIntensity, ...] = ()
    embodied: tuple[GpuEmbodied, ...] = ()
    sites: tuple[Site, ...] = ()
    _by_region: dict[str, tuple[list[datetime], list[Decimal]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, tuple[list[datetime], list[Decimal]]] = {}
        for g in sorted(self.intensities, key=lambda g: (g.region, g.effective_from)):
            starts, values = index.setdefault(g.region, ([], []))
            starts.append(g.effective_from)
            values.append(g.gco2e_per_kwh)
        object.__setattr__(self, "_by_region", index)

    def site(self, kind: Literal["node", "model"], name: str) -> Site | None:
        found = [s for s in self.sites if s.kind == kind and fnmatchcase(name, s.pattern)]
        return max(found, key=lambda s: _specificity(s.pattern), default=None)

    def intensity_at(self, region: str, ts: datetime) -> Decimal | None:
        found = self._by_region.get(region)
        if found is None:
            return None
        starts, values = found
        i = bisect_right(starts, ts)
        return values[i - 1] if i else None

    def gpu(self, gpu_type: str) -> GpuEmbodied | None:
        return next((g for g in self.embodied if g.gpu_type == gpu_type), None)
