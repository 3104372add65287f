"""Month close: list costs and the failed first attempts in the spend windows
(so a document can show list, discount and effective cost per line, with
retries and failures as lines of their own), the frozen lines and documents
of each closed month, and a trigger that refuses to change them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(38, 16)
NEW_COSTS = ("list_cost_usd", "retry_list_cost_usd", "failed_first_cost_usd",
             "failed_first_list_cost_usd")  # fmt: skip
FROZEN = ("month_close", "invoice_line", "invoice_document")
READER = "finops_tenant_reader"
MINE = "(SELECT m.tenant FROM tenant_role m WHERE m.role_name = current_user::text)"


def upgrade() -> None:
    for column in NEW_COSTS:
        op.add_column("spend_window", sa.Column(column, MONEY, nullable=False, server_default="0"))
    # Windows written before this revision: their list cost is their cost
    # (batch discounts before it are not known), their failed first attempts
    # unknown (counted as usage).
    op.execute(
        "UPDATE spend_window SET list_cost_usd = cost_usd, retry_list_cost_usd = retry_cost_usd"
    )
    op.create_table(
        "month_close",
        sa.Column("month", sa.Date, primary_key=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy", sa.dialects.postgresql.JSONB, nullable=False),
        sa.Column("rounding", sa.Text, nullable=False),
        sa.Column("total", sa.Numeric(14, 2), nullable=False),
    )
    op.create_table(
        "invoice_line",
        sa.Column("month", sa.Date, primary_key=True),
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("list_cost", MONEY, nullable=False),
        sa.Column("effective_cost", MONEY, nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("adjusts", sa.Date, nullable=True),
    )
    op.create_index("invoice_line_adjusts", "invoice_line", ["adjusts"])
    op.create_table(
        "invoice_document",
        sa.Column("month", sa.Date, primary_key=True),
        sa.Column("tenant", sa.Text, primary_key=True),  # '' for the summary and the ledger
        sa.Column("format", sa.Text, primary_key=True),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
    )
    op.execute(
        "CREATE FUNCTION finops_closed_month() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF TG_OP = 'TRUNCATE' THEN RAISE EXCEPTION 'closed months never change: % refused on %',"
        " TG_OP, TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation'; END IF;"
        " RAISE EXCEPTION 'month % is closed: its lines and documents never change', OLD.month"
        " USING ERRCODE = 'integrity_constraint_violation'; END $$"
    )
    for table in FROZEN:
        op.execute(
            f"CREATE TRIGGER {table}_frozen BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION finops_closed_month()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION finops_closed_month()"
        )
    for table in ("invoice_line", "invoice_document"):
        op.execute(f"GRANT SELECT ON {table} TO {READER}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} FOR SELECT TO {READER}"
            f" USING (tenant = {MINE})"
        )


def downgrade() -> None:
    for table in reversed(FROZEN):
        op.drop_table(table)
    op.execute("DROP FUNCTION finops_closed_month()")
    for column in NEW_COSTS:
        op.drop_column("spend_window", column)
