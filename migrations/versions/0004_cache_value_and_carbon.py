"""Cache windows keyed also by the model a cache fronts (so hits can be
valued with the price book); carbon reference data: grid intensity with
effective dates, embodied emissions per GPU type, and energy sites.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
GRAMS = sa.Numeric(14, 3)
CACHE_KEYS = {
    "cache_window": ("window_start", "tenant", "route", "layer"),
    "cache_eviction_window": ("window_start", "evicting_tenant", "evicted_tenant", "layer"),
}
COUNTS = {
    "cache_window": ("hits", "misses", "hit_tokens", "miss_tokens", "inserts"),
    "cache_eviction_window": ("evictions", "evicted_tokens"),
}
OUTPUT_COUNT = {
    "cache_window": "hit_output_tokens",
    "cache_eviction_window": "evicted_output_tokens",
}


def _loaded_at() -> sa.Column:
    return sa.Column("loaded_at", TS, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    for table, key in CACHE_KEYS.items():
        for col in ("model", "provider"):
            op.add_column(table, sa.Column(col, sa.Text, nullable=False, server_default=""))
        op.add_column(
            table,
            sa.Column(OUTPUT_COUNT[table], sa.BigInteger, nullable=False, server_default="0"),
        )
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, [*key, "model", "provider"])
    op.create_table(
        "grid_intensity",
        sa.Column("region", sa.Text, primary_key=True),
        sa.Column("effective_from", TS, primary_key=True),
        sa.Column("gco2e_per_kwh", GRAMS, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        _loaded_at(),
    )
    op.create_table(
        "gpu_embodied",
        sa.Column("gpu_type", sa.Text, primary_key=True),
        sa.Column("embodied_kgco2e", GRAMS, nullable=False),
        sa.Column("lifetime_hours", sa.Integer, nullable=False),
        sa.Column("tdp_w", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        _loaded_at(),
    )
    op.create_table(
        "carbon_site",
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("pattern", sa.Text, primary_key=True),
        sa.Column("region", sa.Text, nullable=False),
        sa.Column("gpu_type", sa.Text, nullable=False),
        _loaded_at(),
    )


def downgrade() -> None:
    for table in ("carbon_site", "gpu_embodied", "grid_intensity"):
        op.drop_table(table)
    for table, key in CACHE_KEYS.items():
        # Fold the per-model rows back into one row per old key: the counts
        # are sums, so nothing is lost but the split by model.
        keys, counts = ", ".join(key), COUNTS[table]
        sums = ", ".join(f"sum({c})" for c in counts)
        adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counts)
        op.execute(
            f"INSERT INTO {table} ({keys}, model, provider, {', '.join(counts)})"
            f" SELECT {keys}, '', '', {sums} FROM {table}"
            f" WHERE model <> '' OR provider <> '' GROUP BY {keys}"
            f" ON CONFLICT ({keys}, model, provider) DO UPDATE SET {adds}"
        )
        op.execute(f"DELETE FROM {table} WHERE model <> '' OR provider <> ''")
        op.drop_constraint(f"{table}_pkey", table, type_="primary")
        op.create_primary_key(f"{table}_pkey", table, list(key))
        for col in ("model", "provider", OUTPUT_COUNT[table]):
            op.drop_column(table, col)
