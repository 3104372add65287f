"""Price book v2: prices per region, service tier and prompt-size tier, with
1-hour cache write and reasoning rates; the windows count 1-hour cache
writes and reasoning tokens and split their cost by token kind; unpriced
events keep what repricing needs of the new fields.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(38, 16)
PRICE = sa.Numeric(20, 6)
KIND_COSTS = ("input_cost_usd", "cache_read_cost_usd", "cache_write_5m_cost_usd",
              "cache_write_1h_cost_usd", "output_cost_usd", "reasoning_cost_usd")  # fmt: skip
OLD_KEY = ("model", "provider", "effective_from")
NEW_KEY = ("model", "provider", "region", "service_tier", "from_input_tokens", "effective_from")

# Windows written before this revision: their cost split by kind in
# proportion to each kind's tokens at the list price in force during the
# minute (what the FOCUS export did before), truncated to 16 places and the
# output taking the remainder (never negative), so the kinds add up to
# cost_usd exactly. A window with batch and other calls is split by one
# proportion: its kinds are close, not exact (docs/development.md).
_SPLIT = """
WITH w AS (
    SELECT s.ctid AS row_id, s.cost_usd,
           (s.input_tokens - s.cache_read_tokens - s.cache_write_tokens) * p.input_per_mtok AS i,
           s.cache_read_tokens * p.cache_read_per_mtok AS r,
           s.cache_write_tokens * p.cache_write_per_mtok AS c,
           s.output_tokens * p.output_per_mtok AS o
    FROM spend_window s
    JOIN LATERAL (
        SELECT * FROM price_book b WHERE b.model = s.model AND b.provider = s.provider
          AND b.effective_from < s.window_start + interval '1 minute'
        ORDER BY b.effective_from DESC LIMIT 1
    ) p ON true
    WHERE s.cost_usd <> 0
), parts AS (
    SELECT row_id, cost_usd,
           CASE WHEN i + r + c + o = 0 THEN 0 ELSE trunc(cost_usd * i / (i + r + c + o), 16) END
             AS i,
           CASE WHEN i + r + c + o = 0 THEN 0 ELSE trunc(cost_usd * r / (i + r + c + o), 16) END
             AS r,
           CASE WHEN i + r + c + o = 0 THEN 0 ELSE trunc(cost_usd * c / (i + r + c + o), 16) END
             AS c
    FROM w
)
UPDATE spend_window s SET input_cost_usd = parts.i, cache_read_cost_usd = parts.r,
       cache_write_5m_cost_usd = parts.c,
       output_cost_usd = parts.cost_usd - parts.i - parts.r - parts.c
FROM parts WHERE s.ctid = parts.row_id
"""
# A window no price explains (its price came later in the minute than the
# lookup saw, or was repriced from a version since superseded) keeps its
# cost as uncached input, so the kinds still add up to it.
_UNSPLIT = """
UPDATE spend_window SET input_cost_usd = cost_usd
WHERE cost_usd <> 0 AND input_cost_usd = 0 AND cache_read_cost_usd = 0
  AND cache_write_5m_cost_usd = 0 AND output_cost_usd = 0
"""


def upgrade() -> None:
    op.add_column("price_book", sa.Column("region", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "price_book",
        sa.Column("service_tier", sa.Text, nullable=False, server_default="standard"),
    )
    op.add_column(
        "price_book",
        sa.Column("from_input_tokens", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column("price_book", sa.Column("cache_write_1h_per_mtok", PRICE, nullable=True))
    op.add_column("price_book", sa.Column("reasoning_per_mtok", PRICE, nullable=True))
    op.drop_constraint("price_book_version", "price_book", type_="unique")
    op.create_unique_constraint("price_book_version", "price_book", list(NEW_KEY))
    for column in ("cache_write_1h_tokens", "reasoning_tokens"):
        op.add_column(
            "spend_window", sa.Column(column, sa.BigInteger, nullable=False, server_default="0")
        )
        op.add_column(
            "unpriced_event", sa.Column(column, sa.BigInteger, nullable=False, server_default="0")
        )
    for column in KIND_COSTS:
        op.add_column("spend_window", sa.Column(column, MONEY, nullable=False, server_default="0"))
    op.add_column("unpriced_event", sa.Column("region", sa.Text, nullable=False, server_default=""))
    op.add_column(
        "unpriced_event",
        sa.Column("service_tier", sa.Text, nullable=False, server_default="standard"),
    )
    op.execute("UPDATE unpriced_event SET service_tier = 'batch' WHERE batch")
    op.execute(_SPLIT)
    op.execute(_UNSPLIT)


def downgrade() -> None:
    for column in ("region", "service_tier", "cache_write_1h_tokens", "reasoning_tokens"):
        op.drop_column("unpriced_event", column)
    for column in (*KIND_COSTS, "cache_write_1h_tokens", "reasoning_tokens"):
        op.drop_column("spend_window", column)
    op.drop_constraint("price_book_version", "price_book", type_="unique")
    op.execute(
        "DELETE FROM price_book WHERE region <> '' OR service_tier <> 'standard'"
        " OR from_input_tokens <> 0"
    )
    op.create_unique_constraint("price_book_version", "price_book", list(OLD_KEY))
    for column in ("reasoning_per_mtok", "cache_write_1h_per_mtok", "from_input_tokens",
                   "service_tier", "region"):  # fmt: skip
        op.drop_column("price_book", column)
