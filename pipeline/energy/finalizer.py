"""Split measured node energy among the attempts it served, once the window
is covered.

A node-window is ready when every GPU of the node has reported a sample at
or after the window's end (so no more of its energy can arrive), or when
``timeout`` has passed since the window ended. Its measured millijoules are
split over the attribution weights in ``energy_usage`` exactly as
``pipeline.energy.attribution.largest_remainder`` splits (attributed + idle = measured),
by the database itself, so no row travels to this process; written to
``energy_window`` as ``source = 'measured'``, and the window is marked final.
Late usage or telemetry re-opens a window (see the sinks); splitting it again
replaces its measured rows and counts in ``splits``: the adjustment.
Several workers may run this at once: rows are taken with SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from datetime import timedelta

from pipeline.energy.usage import ENERGY_KEY, TOKEN_SUMS, USAGE_KEY, USAGE_SUMS
from pipeline.stream.pg import Conn, PgSession

log = logging.getLogger(__name__)

_READY = """
SELECT n.window_start, n.node_id, n.measured_mj FROM node_energy_window n
WHERE NOT n.final AND (
    n.window_start + interval '1 minute' <= (
        SELECT min(g.ts) FROM gpu_last_sample g WHERE g.node_id = n.node_id)
    OR n.window_start + interval '1 minute' + %s <= now())
ORDER BY n.window_start, n.node_id
LIMIT %s
FOR UPDATE OF n SKIP LOCKED
"""
_KEY_COLS = ", ".join(ENERGY_KEY)
_GROUP = ", ".join(USAGE_KEY)
_SUMS = ", ".join(USAGE_SUMS)
_WINDOW = "PARTITION BY window_start, node_id"
_DELETE = """
DELETE FROM energy_window e
USING unnest(%s::timestamptz[], %s::text[]) AS r(window_start, node_id)
WHERE e.window_start = r.window_start AND e.node_id = r.node_id AND e.source = 'measured'
"""
# The split, in one statement on the server (no row comes to Python):
# - energy_usage is append-only (a row per batch and key): `gone` takes the
#   ready windows' rows out and `folded` puts back one row per key with
#   their sums. Rows a spend transaction commits meanwhile are not in this
#   snapshot, so they stay, and their transaction re-opens the window: split
#   again later, never lost.
# - `ranked` and `split` are pipeline.energy.attribution.largest_remainder per window:
#   each key's floor of measured x weight / total, and the units left over
#   to the largest remainders, ties to the earlier key (in USAGE_KEY order).
#   numeric, so the products cannot overflow.
# - A window with no weight (no usage, or only zero-token attempts) gets no
#   rows: all of it is idle.
_SPLIT = f"""
WITH ready AS (
    SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bigint[])
        AS r(window_start, node_id, measured_mj)
), gone AS (
    DELETE FROM energy_usage u USING ready r
    WHERE u.window_start = r.window_start AND u.node_id = r.node_id
    RETURNING u.*
), folded AS (
    INSERT INTO energy_usage ({_GROUP}, {_SUMS})
    SELECT {_GROUP}, {", ".join(f"sum({c})" for c in USAGE_SUMS)}
    FROM gone GROUP BY {_GROUP}
    RETURNING {_GROUP}, {_SUMS}
), weighed AS (
    SELECT f.*, r.measured_mj, r.measured_mj::numeric * f.weight AS product,
        sum(f.weight) OVER ({_WINDOW}) AS whole
    FROM folded f JOIN ready r USING (window_start, node_id)
), ranked AS (
    SELECT *, div(product, whole) AS floor_mj,
        row_number() OVER ({_WINDOW} ORDER BY mod(product, whole) DESC, {_KEY_COLS}) AS place,
        measured_mj - sum(div(product, whole)) OVER ({_WINDOW}) AS leftover
    FROM weighed WHERE whole > 0
), split AS (
    INSERT INTO energy_window (window_start, node_id, {_KEY_COLS}, source, attempts,
        {", ".join(TOKEN_SUMS)}, energy_mj)
    SELECT window_start, node_id, {_KEY_COLS}, 'measured', attempts, {", ".join(TOKEN_SUMS)},
        floor_mj + (place <= leftover)::int
    FROM ranked
    RETURNING window_start, node_id, energy_mj
), attributed AS (
    SELECT window_start, node_id, sum(energy_mj) AS mj FROM split GROUP BY window_start, node_id
)
UPDATE node_energy_window n
SET attributed_mj = coalesce(a.mj, 0), idle_mj = r.measured_mj - coalesce(a.mj, 0),
    final = true, splits = n.splits + 1
FROM ready r LEFT JOIN attributed a USING (window_start, node_id)
WHERE n.window_start = r.window_start AND n.node_id = r.node_id
"""


class EnergyFinalizer(PgSession):
    def __init__(self, database_url: str, timeout: timedelta = timedelta(minutes=5)) -> None:
        super().__init__(database_url)
        self._timeout = timeout

    async def run(self, limit: int = 500) -> int:
        """Split every ready node-window (up to ``limit``); how many were split."""
        return await self._retrying(lambda: self._once(limit))

    async def split_all(self, stall_s: float) -> bool:
        """Split every ready node-window; False when that stalls: for
        ``stall_s`` no split completed while the database kept rejecting the
        statements (a bug or bad data, which retrying cannot fix), so a drain
        can fail instead of retrying for ever. An outage is waited out, as
        the sinks wait it out: reconnecting counts as progress."""
        while True:
            split = asyncio.ensure_future(self.run())
            since, outages = time.monotonic(), self.faults["postgres_unavailable"]
            errors = self.faults["sink_error"]
            while not split.done():
                await asyncio.wait({split}, timeout=0.2)
                if self.faults["postgres_unavailable"] != outages:
                    since, outages = time.monotonic(), self.faults["postgres_unavailable"]
                elif self.faults["sink_error"] > errors and time.monotonic() - since > stall_s:
                    split.cancel()
                    with suppress(asyncio.CancelledError):
                        await split
                    return False
            if not split.result():
                return True

    async def _once(self, limit: int) -> int:
        conn = await self._connection()
        async with conn.transaction():
            cur = await conn.execute(_READY, (self._timeout, limit))
            ready = await cur.fetchall()
            if ready:
                await _split(conn, [(w, n, int(m)) for w, n, m in ready])  # type: ignore[call-overload]
        if ready:
            log.info("energy: split %d node-windows", len(ready))
        return len(ready)


async def _split(conn: Conn, ready: list[tuple[object, object, int]]) -> None:
    """Split the measured energy of every ``ready`` (window, node, mJ) in two
    statements, whatever their number."""
    starts, nodes = [w for w, _, _ in ready], [n for _, n, _ in ready]
    await conn.execute(_DELETE, (starts, nodes))
    await conn.execute(_SPLIT, (starts, nodes, [m for _, _, m in ready]))
