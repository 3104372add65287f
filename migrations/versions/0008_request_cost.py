"""The running retry cost of each retried request, for the runaway-request
rule: retries and their cost, and when the request was last active; and each
partition's newest event time, whose minimum over partitions is the event-
time watermark that closes minutes for the rules.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "request_cost",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("first_ts", TS, nullable=False),
        sa.Column("last_ts", TS, nullable=False),
        sa.Column("retries", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("retry_cost_usd", sa.Numeric(38, 16), nullable=False, server_default="0"),
    )
    op.create_index("request_cost_active", "request_cost", ["last_ts"])
    op.add_column("sink_offset", sa.Column("max_event_ts", TS, nullable=True))


def downgrade() -> None:
    op.drop_column("sink_offset", "max_event_ts")
    op.drop_index("request_cost_active", table_name="request_cost")
    op.drop_table("request_cost")
