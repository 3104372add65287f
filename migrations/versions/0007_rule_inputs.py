"""Inputs of the anomaly rules kept in the windows: re-prompts and their
cost, fallbacks, tokenizer drift sums per spend window; latency histograms
per route and model; whether an unpriced event was an invalid output (so a
reprice moves its cost into the re-prompt cost too).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
COUNTS = (
    "invalid_attempts",
    "fallback_attempts",
    "drift_attempts",
    "drift_billed_tokens",
    "drift_abs_tokens",
)


def upgrade() -> None:
    for name in COUNTS:
        op.add_column(
            "spend_window", sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        )
    op.add_column(
        "spend_window",
        sa.Column("invalid_cost_usd", sa.Numeric(38, 16), nullable=False, server_default="0"),
    )
    op.add_column(
        "unpriced_event", sa.Column("invalid", sa.Boolean, nullable=False, server_default="false")
    )
    op.create_table(
        "latency_window",
        sa.Column("window_start", TS, primary_key=True),
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("bucket", sa.SmallInteger, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("latency_window")
    op.drop_column("unpriced_event", "invalid")
    for name in (*COUNTS, "invalid_cost_usd"):
        op.drop_column("spend_window", name)
