"""Carbon reference data in PostgreSQL: load versions, read the book.

Like the price book, loading never rewrites history: loading the same row
again changes nothing, and a different value for an existing key (region and
effective date, GPU type, site pattern) is refused as a whole load.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from sqlalchemy import Engine, Table, select

from models.carbon import CarbonBook, GpuEmbodied, GridIntensity, Site, parse_csv
from models.tables import carbon_site, gpu_embodied, grid_intensity
from pipeline.storage.revisions import LoadResult, Version, load_versions

TABLES: dict[type[GridIntensity | GpuEmbodied | Site], tuple[Table, tuple[str, ...]]] = {
    GridIntensity: (grid_intensity, ("region", "effective_from")),
    GpuEmbodied: (gpu_embodied, ("gpu_type",)),
    Site: (carbon_site, ("kind", "pattern")),
}


def defaults() -> list[GridIntensity | GpuEmbodied | Site]:
    """The bundled illustrative tables in ``models/data``."""
    data = resources.files("models").joinpath("data")
    return [
        *parse_csv(GridIntensity, data.joinpath("grid_intensity.csv").read_text()),
        *parse_csv(GpuEmbodied, data.joinpath("gpu_embodied.csv").read_text()),
        *parse_csv(Site, data.joinpath("carbon_sites.csv").read_text()),
    ]


def load_rows(engine: Engine, rows: Sequence[GridIntensity | GpuEmbodied | Site]) -> LoadResult:
    versions = []
    for row in rows:
        table, key = TABLES[type(row)]
        values = row.model_dump()
        what = " ".join(str(values[k]) for k in key)
        versions.append(
            Version(
                table,
                key,
                tuple(c for c in values if c not in key),
                values,
                f"{table.name} {what}: already loaded with other values",
            )
        )
    return load_versions(engine, versions)


def load_book(engine: Engine) -> CarbonBook:
    with engine.connect() as conn:

        def read(kind: type[GridIntensity | GpuEmbodied | Site]) -> list[dict[str, object]]:
            table, _ = TABLES[kind]
            cols = [table.c[c] for c in kind.model_fields]
            return [dict(r) for r in conn.execute(select(*cols)).mappings()]

        return CarbonBook(
            tuple(GridIntensity.model_validate(r) for r in read(GridIntensity)),
            tuple(GpuEmbodied.model_validate(r) for r in read(GpuEmbodied)),
            tuple(Site.model_validate(r) for r in read(Site)),
        )
