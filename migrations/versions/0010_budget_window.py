"""Token-budget breaches per minute, tenant, route and model: attempts over
the route's input or output cap and the tokens beyond them, for the
token_budget_breach rule. Tenant rows: row-level security like 0009.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

READER = "finops_tenant_reader"
MINE = "(SELECT m.tenant FROM tenant_role m WHERE m.role_name = current_user::text)"


def upgrade() -> None:
    op.create_table(
        "budget_window",
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        *(
            sa.Column(c, sa.BigInteger, nullable=False, server_default="0")
            for c in ("over_input", "over_output", "over_tokens")
        ),
    )
    op.execute(f"GRANT SELECT ON budget_window TO {READER}")
    op.execute("ALTER TABLE budget_window ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON budget_window FOR SELECT TO {READER}"
        f" USING (tenant = {MINE})"
    )


def downgrade() -> None:
    op.drop_table("budget_window")
