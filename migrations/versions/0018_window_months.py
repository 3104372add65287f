"""The other window tables partitioned by month, as ``spend_window`` is
(0017): energy, node energy, cache, cache evictions, latency and token
budgets. Each is rebuilt in place: a partitioned table with the same
columns, checks, primary key, indexes, grants and row-level policies, a
partition per month its rows have (and this month and the next), and its
rows copied. The writers make the months they need from now on
(``pipeline/storage/partitions.py``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TABLES = (
    "energy_window",
    "node_energy_window",
    "cache_window",
    "cache_eviction_window",
    "latency_window",
    "budget_window",
)


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _rows(conn: sa.Connection, sql: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
    return list(conn.execute(sa.text(sql), params))


def _by_month(conn: sa.Connection, table: str) -> None:
    key = [
        c
        for (c,) in _rows(
            conn,
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"
            " ORDER BY array_position(i.indkey, a.attnum)",
            t=table,
        )
    ]
    indexes = _rows(
        conn,
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"
        " AND schemaname = current_schema()",
        t=table,
    )
    policies = _rows(
        conn,
        "SELECT policyname, cmd, roles, qual FROM pg_policies WHERE tablename = :t"
        " AND schemaname = current_schema()",
        t=table,
    )
    grants = _rows(
        conn,
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants"
        " WHERE table_name = :t AND table_schema = current_schema() AND grantee <> current_user",
        t=table,
    )
    (secured,) = _rows(
        conn, "SELECT relrowsecurity FROM pg_class WHERE oid = CAST(:t AS regclass)", t=table
    )[0]

    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    for name, _ in indexes:  # renaming a key's index renames its constraint
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_old")
    op.execute(
        f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
        f" CONSTRAINT {table}_pkey PRIMARY KEY ({', '.join(key)}))"
        " PARTITION BY RANGE (window_start)"
    )
    for name, definition in indexes:
        if name != f"{table}_pkey":
            op.execute(definition)  # as it was, on the new table of the same name
    months = {
        m
        for (m,) in _rows(
            conn,
            f"SELECT DISTINCT date_trunc('month', window_start AT TIME ZONE 'UTC')::date"
            f" FROM {table}_old",
        )
    }
    today = datetime.now(UTC).date().replace(day=1)
    for m in sorted(months | {today, _next_month(today)}):
        op.execute(
            f"CREATE TABLE {table}_p{m:%Y%m} PARTITION OF {table}"
            f" FOR VALUES FROM ('{m} 00:00:00+00') TO ('{_next_month(m)} 00:00:00+00')"
        )
    op.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
    op.execute(f"DROP TABLE {table}_old")
    for grantee, privilege in grants:
        op.execute(f'GRANT {privilege} ON {table} TO "{grantee}"')
    if secured:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for name, cmd, roles, qual in policies:
        to = ", ".join(f'"{r}"' for r in roles)
        op.execute(f"CREATE POLICY {name} ON {table} FOR {cmd} TO {to} USING ({qual})")


def upgrade() -> None:
    conn = op.get_bind()
    for table in TABLES:
        _by_month(conn, table)


def downgrade() -> None:
    raise NotImplementedError("0018 partitions tables in place; restore a backup to go back")
