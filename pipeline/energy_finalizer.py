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
from collections import defaultdict
from datetime import timedelta

from psycopg import AsyncConnection

from pipeline.energy import largest_remainder
from pipeline.energy_usage import ENERGY_KEY, TOKEN_SUMS, USAGE_KEY, USAGE_SUMS
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
# The ready windows as two parallel arrays, joined to each table by value.
_READY_ROWS = "unnest(%s::timestamptz[], %s::text[]) AS r(window_start, node_id)"
# energy_usage is append-only (a row per batch and key): one statement, one
# snapshot, takes the ready windows' rows out, puts back one row per key with
# their sums, and returns those for the split. Rows a spend transaction
# commits meanwhile are not in that snapshot, so they stay, and their
# transaction re-opens the window: split again later, never lost.
_GROUP = ", ".join(USAGE_KEY)
_SUMS = ", ".join(USAGE_SUMS)
_USAGE = f"""
WITH gone AS (
    DELETE FROM energy_usage u USING {_READY_ROWS}
    WHERE u.window_start = r.window_start AND u.node_id = r.node_id
    RETURNING u.*
), folded AS (
    INSERT INTO energy_usage ({_GROUP}, {_SUMS})
    SELECT {_GROUP}, {", ".join(f"sum({c})" for c in USAGE_SUMS)}
    FROM gone GROUP BY {_GROUP}
    RETURNING {_GROUP}, {_SUMS}
)
SELECT * FROM folded ORDER BY {_GROUP}
"""
_DELETE = (
    f"DELETE FROM energy_window e USING {_READY_ROWS}"
    " WHERE e.window_start = r.window_start AND e.node_id = r.node_id AND e.source = 'measured'"
)
_COPY = (
    f"COPY energy_window (window_start, node_id, {_KEY_COLS}, source, attempts,"
    f" {', '.join(TOKEN_SUMS)}, energy_mj) FROM STDIN"
)
_MARK_FINAL = """
UPDATE node_energy_window n SET attributed_mj = r.attributed, idle_mj = r.idle, final = true,
    splits = n.splits + 1
FROM unnest(%s::timestamptz[], %s::text[], %s::bigint[], %s::bigint[])
    AS r(window_start, node_id, attributed, idle)
WHERE n.window_start = r.window_start AND n.node_id = r.node_id
"""


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
            if ready:
                await _split(conn, [(w, n, int(m)) for w, n, m in ready])  # type: ignore[call-overload]
        if ready:
            log.info("energy: split %d node-windows", len(ready))
        return len(ready)


async def _split(
    conn: AsyncConnection[tuple[object, ...]], ready: list[tuple[object, object, int]]
) -> None:
    """Split the measured energy of every ``ready`` (window, node, mJ) in a
    handful of statements, whatever their number: the shares are computed
    here, by :func:`largest_remainder`, the one definition of the split."""
    starts, nodes = [w for w, _, _ in ready], [n for _, n, _ in ready]
    cur = await conn.execute(_USAGE, (starts, nodes))
    served: dict[tuple[object, object], list[tuple[object, ...]]] = defaultdict(list)
    for row in await cur.fetchall():
        served[(row[0], row[1])].append(row[2:])
    await conn.execute(_DELETE, (starts, nodes))
    attributed: list[int] = []
    async with conn.cursor() as c, c.copy(_COPY) as copy:
        for window_start, node_id, measured in ready:
            usage = served.get((window_start, node_id), [])
            weights = [int(r[-1]) for r in usage]  # type: ignore[call-overload]
            if not usage or sum(weights) <= 0:
                attributed.append(0)
                continue
            attributed.append(measured)
            for r, mj in zip(usage, largest_remainder(measured, weights), strict=True):
                key, sums = r[: len(ENERGY_KEY)], r[len(ENERGY_KEY) : -1]
                await copy.write_row((window_start, node_id, *key, "measured", *sums, mj))
    await conn.execute(
        _MARK_FINAL,
        (
            starts,
            nodes,
            attributed,
            [m - a for (_, _, m), a in zip(ready, attributed, strict=True)],
        ),
    )
