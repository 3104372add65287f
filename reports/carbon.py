"""Carbon and SCI per 1k tokens, grouped like ``reports.energy``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

from pipeline.energy.carbon_store import load_book
from pipeline.energy.footprint import Carbon, EnergyCell, NodeEnergy, footprint
from reports.energy import DIMENSIONS


def carbon(
    engine: Engine, start: datetime, end: datetime, by: tuple[str, ...], *, by_region: bool = False
) -> Carbon:
    """Grouped by the energy-window columns ``by`` and, if ``by_region``,
    by the grid region of each cell's site (after them)."""
    unknown = set(by) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}; choose from {DIMENSIONS}")
    extra = "".join(f", {d}" for d in by)  # names checked against DIMENSIONS above
    params = {"start": start, "end": end}
    cells_sql = text(
        "SELECT window_start, node_id, model, source, sum(input_tokens + output_tokens),"
        f" sum(energy_mj){extra} FROM energy_window"
        " WHERE window_start >= :start AND window_start < :end"
        f" GROUP BY window_start, node_id, model, source{extra}"
    )
    # GPUs per node: the ones that have reported telemetry.
    nodes_sql = text(
        "SELECT n.window_start, n.node_id, n.measured_mj, n.attributed_mj, coalesce(g.gpus, 0)"
        " FROM node_energy_window n LEFT JOIN"
        " (SELECT node_id, count(*) AS gpus FROM gpu_last_sample GROUP BY node_id) g"
        " USING (node_id)"
        " WHERE n.window_start >= :start AND n.window_start < :end"
    )
    with engine.connect() as conn:
        cells = [
            EnergyCell(
                r[0],
                str(r[1]),
                str(r[2]),
                str(r[3]),
                tuple(str(v) for v in r[6:]),
                int(r[4]),
                int(r[5]),
            )
            for r in conn.execute(cells_sql, params)
        ]
        nodes = [
            NodeEnergy(r[0], str(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in conn.execute(nodes_sql, params)
        ]
    return footprint(cells, nodes, load_book(engine), by_region=by_region)
