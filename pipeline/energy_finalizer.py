"""Split measured node energy among the attempts it served, once the window
is covered.

A node-window is ready when every GPU of the node has reported a sample at
or after the window's end (so no more of its energy can arrive), or when
``timeout`` has passed since the window ended. Its measured millijoules are
split by ``pipeline.energy.largest_remainder`` over the attribution weights
in ``energy_usage`` (exactly: attributed + idle = measured), written to
``energy_window`` as ``source = 'measured'``, and the window is marked final.
Late usage or telemetry re-opens a window (see the sinks); splitting it again
replaces its measured rows and counts in ``splits``: the adjustment.
Several workers may run this at once: rows are taken with SKIP LOCKED.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from psycopg import AsyncConnection

from pipeline.energy import largest_remainder
from pipeline.energy_usage import ENERGY_KEY, TOKEN_SUMS
from pipeline.offset_sink import PgSession

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
_USAGE = (
    f"SELECT {_KEY_COLS}, attempts, {', '.join(TOKEN_SUMS)}, weight FROM energy_usage"
    f" WHERE window_start = %s AND node_id = %s ORDER BY {_KEY_COLS}"
)
_INSERT = (
    f"INSERT INTO energy_window (window_start, node_id, {_KEY_COLS}, source, attempts,"
    f" {', '.join(TOKEN_SUMS)}, energy_mj)"
    f" VALUES (%s, %s, {', '.join(['%s'] * len(ENERGY_KEY))}, 'measured', %s, %s, %s, %s, %s)"
)


class EnergyFinalizer(PgSession):
    def __init__(self, database_url: str, timeout: timedelta = timedelta(minutes=5)) -> None:
        super().__init__(database_url)
        self._timeout = timeout

    async def run(self, limit: int = 500) -> int:
        """Split every ready node-window (up to ``limit``); how many were split."""
        return await self._retrying(lambda: self._once(limit))

    async def _once(self, limit: int) -> int:
        conn = await self._connection()
        async with conn.transaction():
            cur = await conn.execute(_READY, (self._timeout, limit))
            ready = await cur.fetchall()
            for window_start, node_id, measured in ready:
                await _split(conn, window_start, node_id, int(measured))  # type: ignore[call-overload]
        if ready:
            log.info("energy: split %d node-windows", len(ready))
        return len(ready)


async def _split(
    conn: AsyncConnection[tuple[object, ...]], window_start: object, node_id: object, measured: int
) -> None:
    cur = await conn.execute(_USAGE, (window_start, node_id))
    usage = await cur.fetchall()
    weights = [int(r[-1]) for r in usage]  # type: ignore[call-overload]
    await conn.execute(
        "DELETE FROM energy_window"
        " WHERE window_start = %s AND node_id = %s AND source = 'measured'",
        (window_start, node_id),
    )
    attributed = 0
    if usage and sum(weights) > 0:
        shares = largest_remainder(measured, weights)
        attributed = measured
        async with conn.cursor() as c:
            await c.executemany(
                _INSERT,
                [
                    (window_start, node_id, *r[: len(ENERGY_KEY)], *r[len(ENERGY_KEY) : -1], mj)
                    for r, mj in zip(usage, shares, strict=True)
                ],
            )
    await conn.execute(
        "UPDATE node_energy_window SET attributed_mj = %s, idle_mj = %s, final = true,"
        " splits = splits + 1 WHERE window_start = %s AND node_id = %s",
        (attributed, measured - attributed, window_start, node_id),
    )
