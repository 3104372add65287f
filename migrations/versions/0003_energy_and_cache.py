"""Energy and cache attribution: usage weights per node-window, measured
node energy and its split, the last telemetry sample per GPU, energy and
cache windows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ENERGY_KEY = ("model", "tenant", "route", "feature", "batch_bucket", "cache_state")


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def _key(*names: str) -> list[sa.Column]:
    return [sa.Column(n, sa.Text, primary_key=True) for n in names]


def upgrade() -> None:
    op.create_table(
        "energy_usage",
        sa.Column("window_start", TS, primary_key=True),
        *_key("node_id", *ENERGY_KEY),
        *(_count(c) for c in ("attempts", "input_tokens", "output_tokens", "cache_read_tokens")),
        _count("weight"),
    )
    op.create_table(
        "node_energy_window",
        sa.Column("window_start", TS, primary_key=True),
        *_key("node_id"),
        *(_count(c) for c in ("measured_mj", "unmeasured_ms", "attributed_mj", "idle_mj")),
        sa.Column("final", sa.Boolean, nullable=False, server_default="false"),
        _count("splits"),
    )
    op.create_table(
        "gpu_last_sample",
        *_key("node_id", "gpu"),
        sa.Column("ts", TS, nullable=False),
        sa.Column("power_w", sa.Numeric(12, 3), nullable=False),
        sa.Column("energy_mj", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "energy_window",
        sa.Column("window_start", TS, primary_key=True),
        *_key("node_id", *ENERGY_KEY, "source"),
        *(_count(c) for c in ("attempts", "input_tokens", "output_tokens", "cache_read_tokens")),
        _count("energy_mj"),
    )
    op.create_table(
        "cache_window",
        sa.Column("window_start", TS, primary_key=True),
        *_key("tenant", "route", "layer"),
        *(_count(c) for c in ("hits", "misses", "hit_tokens", "miss_tokens", "inserts")),
    )
    op.create_table(
        "cache_eviction_window",
        sa.Column("window_start", TS, primary_key=True),
        *_key("evicting_tenant", "evicted_tenant", "layer"),
        _count("evictions"),
        _count("evicted_tokens"),
    )


def downgrade() -> None:
    for table in (
        "cache_eviction_window",
        "cache_window",
        "energy_window",
        "gpu_last_sample",
        "node_energy_window",
        "energy_usage",
    ):
        op.drop_table(table)
