"""Alerts: one row per firing episode (firing -> resolved), found by its
stable dedup key; and the evaluator's watermark (the last closed minute the
rules ran on).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("dedup_key", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("subject", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("value", sa.Numeric, nullable=False),
        sa.Column("threshold", sa.Numeric, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("contributors", postgresql.JSONB, nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("fired_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("notified_at", TS, nullable=True),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("acked_by", sa.Text, nullable=True),
    )
    op.create_index(
        "alert_one_firing",
        "alert",
        ["dedup_key"],
        unique=True,
        postgresql_where=sa.text("status = 'firing'"),
    )
    op.create_index("alert_by_tenant", "alert", ["tenant", "fired_at"])
    op.create_table(
        "alert_watermark",
        sa.Column("evaluator", sa.Text, primary_key=True),
        sa.Column("evaluated_through", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_watermark")
    op.drop_index("alert_by_tenant", table_name="alert")
    op.drop_index("alert_one_firing", table_name="alert")
    op.drop_table("alert")
