"""The spend path: price book, spend windows, dedup, sink offsets, dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MONEY = sa.Numeric(38, 16)
PRICE = sa.Numeric(20, 6)
TS = sa.DateTime(timezone=True)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def _money(name: str) -> sa.Column:
    return sa.Column(name, MONEY, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "price_book",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("effective_from", TS, nullable=False),
        sa.Column("input_per_mtok", PRICE, nullable=False),
        sa.Column("output_per_mtok", PRICE, nullable=False),
        sa.Column("cache_read_per_mtok", PRICE, nullable=False),
        sa.Column("cache_write_per_mtok", PRICE, nullable=False),
        sa.Column("batch_discount", sa.Numeric(5, 4), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default="USD"),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("loaded_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("model", "provider", "effective_from", name="price_book_version"),
    )
    op.create_table(
        "spend_window",
        sa.Column("window_start", TS, primary_key=True),
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("feature", sa.Text, primary_key=True),
        sa.Column("provider", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        _count("attempts"),
        _count("requests"),
        _count("retry_attempts"),
        _count("failed_attempts"),
        _count("unpriced_attempts"),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("cache_read_tokens"),
        _count("cache_write_tokens"),
        _money("cost_usd"),
        _money("retry_cost_usd"),
        _money("failed_cost_usd"),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    # Roll-ups by tenant over time ranges are the common report query.
    op.create_index("spend_window_tenant_time", "spend_window", ["tenant", "window_start"])
    op.create_table(
        "unpriced_event",
        sa.Column("event_key", sa.Uuid, primary_key=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("failed", sa.Boolean, nullable=False),
        sa.Column("batch", sa.Boolean, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
    )
    op.create_index("unpriced_event_model", "unpriced_event", ["model", "provider"])
    op.create_table(
        "seen_event",
        sa.Column("event_key", sa.Uuid, primary_key=True),
        sa.Column("event_ts", TS, nullable=False),
    )
    op.create_table(
        "sink_offset",
        sa.Column("sink", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        _count("events_accepted"),
        _count("events_duplicate"),
        _count("lines_dead_lettered"),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("topic", "partition", "offset", "line", name="dead_letter_position"),
    )


def downgrade() -> None:
    for table in (
        "dead_letter",
        "sink_offset",
        "seen_event",
        "unpriced_event",
        "spend_window",
        "price_book",
    ):
        op.drop_table(table)
