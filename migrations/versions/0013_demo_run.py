"""demo_run: the hours `finops demo` published and with what settings, so a
re-run never sends an hour's cache events twice (they carry no id) and two
settings never share an hour (see pipeline/testbed/demo_hours.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "demo_run",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("rate", sa.Numeric, nullable=False),
        sa.Column("incident", sa.Text, nullable=True),
        sa.Column(
            "claimed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # Null until the whole hour was published.
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("demo_run")
