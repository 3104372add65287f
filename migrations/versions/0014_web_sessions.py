"""Expiring API tokens and server-side web sessions: a login cookie holds a
random session id (only its SHA-256 is stored), never the API token.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # NULL: the token does not expire (tokens made before this revision).
    op.add_column("api_token", sa.Column("expires_at", TS, nullable=True))
    op.create_table(
        "web_session",
        sa.Column("session_sha256", sa.Text, primary_key=True),
        sa.Column(
            "token_id",
            sa.BigInteger,
            sa.ForeignKey("api_token.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("web_session_expires", "web_session", ["expires_at"])


def downgrade() -> None:
    op.drop_table("web_session")
    op.drop_column("api_token", "expires_at")
