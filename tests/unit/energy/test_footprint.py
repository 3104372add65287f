"""Operational and embodied carbon, SCI per 1k tokens, and the carbon tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.carbon import CarbonBook, GpuEmbodied, GridIntensity, Site, parse_csv
from pipeline.energy.footprint import GRAMS, EnergyCell, NodeEnergy, footprint

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GPU = "H100"
BOOK = CarbonBook(
    intensities=(
        GridIntensity(region="west", effective_from=T0, gco2e_per_kwh=Decimal(360), source="t"),
        GridIntensity(region="east", effective_from=T0, gco2e_per_kwh=Decimal(370), source="t"),
    ),
    # 438 kg over 36,500 h is 12 g per GPU-hour.
    embodied=(
        GpuEmbodied(
            gpu_type=GPU,
            embodied_kgco2e=Decimal(438),
            lifetime_hours=36500,
            tdp_w=600,
            source="t",
        ),
    ),
    sites=(
        Site(kind="node", pattern="gpu-*", region="west", gpu_type=GPU),
        Site(kind="node", pattern="*", region="east", gpu_type=GPU),
        Site(kind="model", pattern="claude-*", region="east", gpu_type=GPU),
    ),
)


def _cell(tenant: str, mj: int, tokens: int, *, node: str = "gpu-a1", model: str = "qwen3-32b",
          source: str = "measured", at: datetime = T0) -> EnergyCell:  # fmt: skip
    return EnergyCell(at, node, model, source, (tenant,), tokens, mj)


def test_hand_computed_sci_for_a_shared_node_and_an_api_call() -> None:
    # One minute on a 2-GPU node in a 360 g/kWh region: 40,000,000 mJ measured,
    # acme drew 20,000,000 for 2,000 tokens, globex 10,000,000 for 500, 10,000,000 idle.
    node = NodeEnergy(T0, "gpu-a1", 40_000_000, 30_000_000, gpus=2)
    api = _cell("acme", 3_600_000, 1000, node="gw-1", model="claude-4.5-sonnet", source="estimated")
    got = footprint([_cell("acme", 20_000_000, 2000), _cell("globex", 10_000_000, 500), api],
                    [node], BOOK)  # fmt: skip
    acme, globex = got.groups[("acme", "measured")], got.groups[("globex", "measured")]
    # O = E x I: 20,000,000 mJ = 1/180 kWh, x 360 = 2 g. M: the node-minute
    # reserves 2 GPUs x 12 g/h / 60 = 0.4 g, half of it acme's (its energy share).
    assert (acme.operational_g, acme.embodied_g) == (Decimal(2), Decimal("0.2"))
    assert acme.sci_per_1k_tokens == Decimal("1.1")  # (2 + 0.2) / 2
    assert (globex.operational_g, globex.embodied_g) == (Decimal(1), Decimal("0.1"))
    assert globex.sci_per_1k_tokens == Decimal("2.2")
    assert (got.idle.operational_g, got.idle.embodied_g) == (Decimal(1), Decimal("0.1"))
    # The API call: 1 Wh in the east at 370 g/kWh is 0.37 g; it kept a 600 W GPU
    # for 1/600 h, 12 g/h x 1/600 = 0.02 g.
    est = got.groups[("acme", "estimated")]
    assert (est.operational_g, est.embodied_g) == (Decimal("0.37"), Decimal("0.02"))
    assert est.sci_per_1k_tokens == Decimal("0.39")
    # The fleet includes idle: 4.4 g + 0.39 g over 3,500 tokens.
    assert got.fleet.carbon_g == Decimal("4.79")
    sci = got.fleet.sci_per_1k_tokens
    assert sci is not None and sci.quantize(Decimal("1e-12")) == Decimal("1.368571428571")


def test_the_most_specific_site_and_the_intensity_in_force_apply() -> None:
    later = GridIntensity(
        region="west", effective_from=T0 + timedelta(minutes=1), gco2e_per_kwh=Decimal(0),
        source="t",
    )  # fmt: skip
    book = CarbonBook((*BOOK.intensities, later), BOOK.embodied, BOOK.sites)
    assert book.site("node", "gpu-a1").region == "west"  # type: ignore[union-attr]
    assert book.site("node", "cpu-9").region == "east"  # type: ignore[union-attr]
    assert book.site("model", "gpt-4o") is None
    cells = [_cell("a", 3_600_000, 1), _cell("a", 3_600_000, 1, at=T0 + timedelta(minutes=1))]
    got = footprint(cells, [], book).groups[("a", "measured")]
    assert got.operational_g == Decimal("0.36")  # the second minute is at 0 g/kWh


def test_energy_without_a_site_or_an_intensity_is_unlocated_not_guessed() -> None:
    early = _cell("a", 1000, 1, at=T0 - timedelta(days=1))  # before any intensity
    nowhere = _cell("a", 2000, 1, node="gw-1", model="gpt-4o", source="estimated")
    got = footprint([early, nowhere], [], BOOK)
    assert got.groups[("a", "measured")].unlocated_mj == 1000
    assert got.groups[("a", "estimated")].unlocated_mj == 2000
    assert got.fleet.carbon_g == 0


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # minute
            st.sampled_from(["gpu-a1", "gpu-a2", "cpu-1"]),
            st.integers(1, 8),  # gpus
            st.lists(st.integers(0, 10**9), max_size=4),  # attributed parts
            st.integers(0, 10**9),  # idle
        ),
        max_size=12,
        unique_by=lambda t: (t[0], t[1]),
    )
)
def test_embodied_and_operational_carbon_are_conserved(
    windows: list[tuple[int, str, int, list[int], int]],
) -> None:
    """Whatever the split, the groups and the idle line carry exactly the
    node-windows' embodied carbon and their energy's operational carbon."""
    cells, nodes = [], []
    want_embodied = want_operational = Decimal(0)
    for minute, node, gpus, parts, idle in windows:
        at = T0 + timedelta(minutes=minute)
        measured = sum(parts) + idle
        nodes.append(NodeEnergy(at, node, measured, sum(parts), gpus))
        cells += [_cell(f"t{i}", mj, 1, node=node, at=at) for i, mj in enumerate(parts)]
        intensity = 360 if node.startswith("gpu-") else 370
        with localcontext(GRAMS):  # the precision the code promises
            want_embodied += Decimal(gpus * 12) / 60
            want_operational += Decimal(measured) * intensity / Decimal(3_600_000_000)
    got = footprint(cells, nodes, BOOK).fleet
    tolerance = Decimal("1e-30")
    assert abs(got.embodied_g - want_embodied) < tolerance
    assert abs(got.operational_g - want_operational) < tolerance


def test_the_bundled_tables_parse_and_every_region_has_an_intensity() -> None:
    data = resources.files("models").joinpath("data")
    intensity = parse_csv(GridIntensity, data.joinpath("grid_intensity.csv").read_text())
    gpus = parse_csv(GpuEmbodied, data.joinpath("gpu_embodied.csv").read_text())
    sites = parse_csv(Site, data.joinpath("carbon_sites.csv").read_text())
    assert {s.region for s in sites} <= {g.region for g in intensity}
    assert {s.gpu_type for s in sites} <= {g.gpu_type for g in gpus}
    book = CarbonBook(tuple(intensity), tuple(gpus), tuple(sites))
    for kind in ("node", "model"):  # a catch-all exists for each kind
        assert book.site(kind, "anything-new") is not None  # type: ignore[arg-type]


def test_bad_carbon_csv_is_refused_with_its_line() -> None:
    with pytest.raises(ValueError, match="header must be exactly"):
        parse_csv(GridIntensity, "region,gco2e\nx,1\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_csv(GridIntensity, "region,effective_from,gco2e_per_kwh,source\nx,2025-01-01,-5,s\n")
