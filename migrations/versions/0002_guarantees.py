"""Billing-grade guarantees: payload fingerprints for conflict detection,
owner epochs for zombie fencing, replay marks on dead letters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("seen_event", sa.Column("fingerprint", sa.Uuid, nullable=True))
    op.add_column(
        "sink_offset",
        sa.Column("owner_epoch", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column("dead_letter", sa.Column("replayed_at", TS, nullable=True))


def downgrade() -> None:
    op.drop_column("dead_letter", "replayed_at")
    op.drop_column("sink_offset", "owner_epoch")
    op.drop_column("seen_event", "fingerprint")
