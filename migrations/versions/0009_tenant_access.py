"""Tenant access: API tokens (only their SHA-256 is stored), one PostgreSQL
role per tenant, and row-level security on every table that holds a
tenant's rows, so a tenant's token reads only its own tenant even if the
Python check in front of it were wrong.

A tenant role is NOLOGIN and a member of ``finops_tenant_reader``, which may
only SELECT the tenant tables; the policies compare each row's tenant with the
tenant mapped to ``current_user`` in ``tenant_role``. The web server runs a
tenant's queries after ``SET LOCAL ROLE`` to that role. The owner (the
pipeline's own login) is not subject to the policies.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
READER = "finops_tenant_reader"
# The mapped tenant of the role running the query (NULL for any other role).
MINE = "(SELECT m.tenant FROM tenant_role m WHERE m.role_name = current_user::text)"
# Each table with a tenant's rows, and which rows are that tenant's.
POLICIES = {
    "spend_window": f"tenant = {MINE}",
    "unpriced_event": f"tenant = {MINE}",
    "energy_window": f"tenant = {MINE}",
    "cache_window": f"tenant = {MINE}",
    "cache_eviction_window": f"evicted_tenant = {MINE} OR evicting_tenant = {MINE}",
    "request_cost": f"tenant = {MINE}",
    "alert": f"tenant = {MINE}",
    "tenant_role": "role_name = current_user::text",
}


def upgrade() -> None:
    op.create_table(
        "tenant_role",
        sa.Column("role_name", sa.Text, primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False, unique=True),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("token_sha256", sa.Text, nullable=False, unique=True),
        # NULL: an admin token, which reads every tenant.
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("label", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
    )
    # Roles belong to the cluster, not the database: another database of the
    # same cluster may have created it already.
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER}')"
        f" THEN CREATE ROLE {READER} NOLOGIN; END IF; END $$"
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
    for table, rows in POLICIES.items():
        op.execute(f"GRANT SELECT ON {table} TO {READER}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} FOR SELECT TO {READER} USING ({rows})"
        )


def downgrade() -> None:
    for table in POLICIES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE SELECT ON {table} FROM {READER}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {READER}")
    op.drop_table("api_token")
    op.drop_table("tenant_role")
