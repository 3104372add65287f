"""PostgreSQL for the stream: one connection per session, one transaction at
a time, every failure retried, and COPY helpers for batches of rows.

Not acking is always safe, while an error that escaped an agent would make
faust ack the batch and lose it; so every database failure is retried with
backoff, forever, and logged and counted in ``faults`` by kind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Final, TypeVar

import polars as pl
import psycopg
from psycopg import AsyncConnection, AsyncCursor

log = logging.getLogger(__name__)
T = TypeVar("T")
Conn = AsyncConnection[tuple[object, ...]]

# Postgres ends a transaction left idle this long, releasing a frozen
# worker's row locks; far above any healthy gap between statements.
_SESSION_SETUP = "SET idle_in_transaction_session_timeout = '20s'"


class Stalled(Exception):
    """The database kept refusing a statement no retry can fix."""


# SQLSTATE classes of failures that pass: connection exceptions, transaction
# rollbacks (serialization failures, deadlocks), insufficient resources,
# object-not-in-state (lock timeouts), operator intervention (a restart),
# system errors. Everything else (data exceptions, integrity violations,
# syntax or undefined objects) fails the same way every time.
_TRANSIENT: Final = frozenset({"08", "40", "53", "55", "57", "58"})


# Single states that pass though their class does not: a key another worker
# committed meanwhile (the retry then sees it, see the spend sink's dedup),
# and a transaction the server ended for idling (a slow broker ack).
_TRANSIENT_STATES: Final = frozenset({"23505", "25P03"})


def transient(exc: BaseException) -> bool:
    """Would the same statement succeed if tried again later?"""
    if isinstance(exc, psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # no answer from the server: the connection
        return isinstance(exc, psycopg.OperationalError)
    return state in _TRANSIENT_STATES or state[:2] in _TRANSIENT


def refused_by_data(exc: psycopg.Error) -> bool:
    """Did the database refuse a value (a data exception, an integrity
    violation, or a value the driver cannot send), so that leaving the line
    that holds it out would let the rest through?"""
    if transient(exc):
        return False
    if exc.sqlstate is None:
        return isinstance(exc, psycopg.DataError)
    return exc.sqlstate[:2] in ("22", "23")


class PgSession:
    """One connection, one transaction at a time, every failure retried."""

    # Temp tables staged into, created once per connection.
    stage_ddl = ""
    # How long a deterministic database error is retried before Stalled.
    stall_s = 300.0

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: Conn | None = None
        # Callers in other tasks (the drain watcher, the price-book refresh)
        # wait their turn instead of interleaving two transactions' statements.
        self._lock = asyncio.Lock()
        self.faults: Counter[str] = Counter()

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=False, connect_timeout=10
            )
            async with conn.transaction():
                await conn.execute(_SESSION_SETUP)
                if self.stage_ddl:
                    await conn.execute(self.stage_ddl)
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op`` until it succeeds. A transient failure (the connection, a
        serialization failure, a deadlock, a restart) is waited out for as
        long as it lasts; any other database error is retried too (never ack
        what was not written), but not for longer than ``stall_s``: then
        :class:`Stalled` is raised, and the stage stops the process rather
        than wedge its partitions in silence."""
        delay = 0.1
        refused_since: float | None = None
        while True:
            try:
                async with self._lock:
                    return await op()
            except psycopg.Error as exc:
                if transient(exc):
                    refused_since = None
                    self.faults["postgres_unavailable"] += 1
                    log.warning("fault postgres_unavailable (%s); retrying in %.1fs", exc, delay)
                else:
                    now = time.monotonic()
                    refused_since = refused_since or now
                    self.faults["sink_error"] += 1
                    log.error("fault sink_error (%r); retrying in %.1fs", exc, delay)
                    if now - refused_since > self.stall_s:
                        raise Stalled(f"the database refused for {self.stall_s:.0f} s") from exc
            async with self._lock:
                await self._discard_connection()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _discard_connection(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """The rows of one read-only statement, in a transaction of its own."""

        async def once() -> list[tuple[object, ...]]:
            conn = await self._connection()
            async with conn.transaction():
                cur = await conn.execute(sql, params)
                return await cur.fetchall()

        return await self._retrying(once)


def as_csv(frame: pl.DataFrame) -> str:
    return frame.write_csv(include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z")


async def copy_rows(
    cur: AsyncCursor[tuple[object, ...]], frame: pl.DataFrame, table: str, cols: tuple[str, ...]
) -> None:
    """COPY the ``cols`` of ``frame`` straight into ``table`` (append-only)."""
    if frame.is_empty():
        return
    async with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy:
        await copy.write(as_csv(frame.select(cols)))


def merge_sql(table: str, key: tuple[str, ...], sums: tuple[str, ...], extra: str = "") -> str:
    """Add the rows staged in ``stage_<table>`` into ``table``: partial sums
    meet in an upsert, so every worker writes its share independently.
    ``extra`` is appended to the update (``updated_at = now()``)."""
    cols = ", ".join((*key, *sums))
    # In key order: workers merging into the same rows lock them in one
    # order, so they wait for each other instead of deadlocking.
    return (
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage_{table} "
        f"ORDER BY {', '.join(key)} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(
            [*(f"{c} = {table}.{c} + excluded.{c}" for c in sums), *([extra] if extra else [])]
        )
    )


async def copy_merge(
    cur: AsyncCursor[tuple[object, ...]],
    frame: pl.DataFrame,
    table: str,
    key: tuple[str, ...],
    sums: tuple[str, ...],
) -> None:
    """COPY ``frame`` (columns ``key`` + ``sums``) into ``stage_<table>`` and
    merge it: far cheaper than a row-by-row upsert for thousands of rows."""
    if frame.is_empty():
        return
    await copy_rows(cur, frame, f"stage_{table}", (*key, *sums))
    await cur.execute(merge_sql(table, key, sums))
