"""Bounded storage: ``seen_event`` partitioned by event day (retention drops
days past the dedup horizon), ``spend_window`` partitioned by month (minute
retention drops months), and hourly and daily roll-ups of ``spend_window``
kept by statement triggers, so every write of the minutes (the sink's merge,
a reprice, a repair) adds the same amounts to them in its own transaction,
while dropping a month of minutes leaves them whole. A partial index finds
the node-minutes whose energy waits to be split (a metric reads it).

Existing rows are copied into the new tables, and the roll-ups are built
from the minutes there are.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

READER = "finops_tenant_reader"  # as in 0009
MINE = "(SELECT m.tenant FROM tenant_role m WHERE m.role_name = current_user::text)"
KEY = ("window_start", "tenant", "route", "feature", "provider", "model")
ROLLUPS = {"spend_window_hour": "hour", "spend_window_day": "day"}


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _sums(conn: sa.Connection) -> list[str]:
    """spend_window's additive columns as they stand at this revision."""
    return [
        c
        for (c,) in conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'spend_window_old' AND table_schema = current_schema()"
                " ORDER BY ordinal_position"
            )
        )
        if c not in KEY and c != "updated_at"
    ]


def _partition_seen_event(conn: sa.Connection) -> None:
    op.execute("ALTER TABLE seen_event RENAME TO seen_event_old")
    op.execute(
        "ALTER TABLE seen_event_old RENAME CONSTRAINT seen_event_pkey TO seen_event_old_pkey"
    )
    op.execute(
        "CREATE TABLE seen_event (event_key uuid NOT NULL, event_ts timestamptz NOT NULL,"
        " fingerprint uuid, event_day date NOT NULL,"
        " CONSTRAINT seen_event_pkey PRIMARY KEY (event_key, event_day))"
        " PARTITION BY RANGE (event_day)"
    )
    days = conn.execute(
        sa.text("SELECT DISTINCT (event_ts AT TIME ZONE 'UTC')::date FROM seen_event_old")
    ).scalars()
    for d in days:
        op.execute(
            f"CREATE TABLE seen_event_p{d:%Y%m%d} PARTITION OF seen_event"
            f" FOR VALUES FROM ('{d}') TO ('{d + timedelta(days=1)}')"
        )
    op.execute(
        "INSERT INTO seen_event (event_key, event_ts, fingerprint, event_day)"
        " SELECT event_key, event_ts, fingerprint, (event_ts AT TIME ZONE 'UTC')::date"
        " FROM seen_event_old"
    )
    op.execute("DROP TABLE seen_event_old")


def _partition_spend_window(conn: sa.Connection) -> list[str]:
    op.execute("ALTER TABLE spend_window RENAME TO spend_window_old")
    op.execute(
        "ALTER TABLE spend_window_old RENAME CONSTRAINT spend_window_pkey TO spend_window_old_pkey"
    )
    op.execute("ALTER INDEX spend_window_tenant_time RENAME TO spend_window_old_tenant_time")
    op.execute(
        "CREATE TABLE spend_window (LIKE spend_window_old INCLUDING DEFAULTS"
        " INCLUDING CONSTRAINTS, CONSTRAINT spend_window_pkey PRIMARY KEY"
        f" ({', '.join(KEY)})) PARTITION BY RANGE (window_start)"
    )
    op.execute("CREATE INDEX spend_window_tenant_time ON spend_window (tenant, window_start)")
    months = set(
        conn.execute(
            sa.text(
                "SELECT DISTINCT date_trunc('month', window_start AT TIME ZONE 'UTC')::date"
                " FROM spend_window_old"
            )
        ).scalars()
    )
    today = datetime.now(UTC).date().replace(day=1)
    months |= {today, _next_month(today)}
    for m in sorted(months):
        op.execute(
            f"CREATE TABLE spend_window_p{m:%Y%m} PARTITION OF spend_window"
            f" FOR VALUES FROM ('{m} 00:00:00+00') TO ('{_next_month(m)} 00:00:00+00')"
        )
    sums = _sums(conn)
    cols = ", ".join((*KEY, *sums, "updated_at"))
    op.execute(f"INSERT INTO spend_window ({cols}) SELECT {cols} FROM spend_window_old")
    op.execute("DROP TABLE spend_window_old")
    return sums


def _rollups(sums: list[str]) -> None:
    """The roll-up tables, filled from the minutes, and the triggers that
    keep them: each statement's new rows added, its old rows subtracted."""
    dims = ", ".join(KEY[1:])
    for table, grain in ROLLUPS.items():
        op.execute(
            f"CREATE TABLE {table} (LIKE spend_window INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
            f" CONSTRAINT {table}_pkey PRIMARY KEY ({', '.join(KEY)}))"
        )
        op.execute(f"ALTER TABLE {table} DROP COLUMN updated_at")
        op.execute(f"CREATE INDEX {table}_tenant_time ON {table} (tenant, window_start)")
        op.execute(
            f"INSERT INTO {table} ({', '.join((*KEY, *sums))})"
            f" SELECT date_trunc('{grain}', window_start, 'UTC'), {dims},"
            f" {', '.join(f'sum({c})' for c in sums)}"
            f" FROM spend_window GROUP BY 1, {dims}"
        )
    add = {
        table: (
            f"INSERT INTO {table} ({', '.join((*KEY, *sums))})"
            f" SELECT date_trunc('{grain}', window_start, 'UTC'), {dims},"
            f" {', '.join(f'sum({c})' for c in sums)} FROM ({{rows}}) AS d GROUP BY 1, {dims}"
            # In key order, as every writer locks rows: two workers adding
            # to the same hours cannot deadlock.
            f" ORDER BY 1, {dims}"
            f" ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
        )
        for table, grain in ROLLUPS.items()
    }
    cols = ", ".join((*KEY, *sums))
    negated = ", ".join((*KEY, *(f"-{c}" for c in sums)))
    changes = {
        "insert": f"SELECT {cols} FROM new_rows",
        "update": f"SELECT {cols} FROM new_rows UNION ALL SELECT {negated} FROM old_rows",
    }
    for event, rows in changes.items():
        body = ";\n".join(q.format(rows=rows) for q in add.values())
        op.execute(
            f"CREATE FUNCTION spend_rollup_{event}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {body}; RETURN NULL; END $$"
        )
    op.execute(
        "CREATE TRIGGER spend_rollup_insert AFTER INSERT ON spend_window"
        " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION spend_rollup_insert()"
    )
    op.execute(
        "CREATE TRIGGER spend_rollup_update AFTER UPDATE ON spend_window"
        " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION spend_rollup_update()"
    )


def _tenant_access() -> None:
    """What 0009 gave spend_window, for the new table and its roll-ups: a
    tenant's role reads its own rows only."""
    for table in ("spend_window", *ROLLUPS):
        op.execute(f"GRANT SELECT ON {table} TO {READER}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} FOR SELECT TO {READER}"
            f" USING (tenant = {MINE})"
        )


def upgrade() -> None:
    conn = op.get_bind()
    _partition_seen_event(conn)
    _rollups(_partition_spend_window(conn))
    _tenant_access()
    op.execute("CREATE INDEX node_energy_window_open ON node_energy_window (final) WHERE NOT final")


def downgrade() -> None:
    raise NotImplementedError("0017 partitions tables in place; restore a backup to go back")
