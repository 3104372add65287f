"""The route catalog (token and latency budgets, retries, fallback) and the
anomaly rules' settings, loaded from YAML by ``finops catalog load``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "route_catalog",
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("input_cap", sa.Integer, nullable=False),
        sa.Column("output_cap", sa.Integer, nullable=False),
        sa.Column("hard_cap_action", sa.Text, nullable=False),
        sa.Column("p50_ms", sa.Integer, nullable=False),
        sa.Column("p95_ms", sa.Integer, nullable=False),
        sa.Column("p99_ms", sa.Integer, nullable=False),
        sa.Column("ttft_ms", sa.Integer, nullable=True),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("fallback_model", sa.Text, nullable=True),
        sa.Column("loaded_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "alert_rule",
        sa.Column("rule", sa.Text, primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("params", postgresql.JSONB, nullable=False),
        sa.Column("loaded_at", TS, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("alert_rule")
    op.drop_table("route_catalog")
