"""Who may read the pages: tenants' roles, API tokens and login sessions."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Identity, Index, Table, Text, func

from models.schema import TS, metadata

# Tenant access (migration 0009 adds the roles and row-level security): each
# tenant's PostgreSQL role, and API tokens by their SHA-256 (tenant NULL: admin).
tenant_role = Table(
    "tenant_role",
    metadata,
    Column("role_name", Text, primary_key=True),
    Column("tenant", Text, nullable=False, unique=True),
)

api_token = Table(
    "api_token",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("token_sha256", Text, nullable=False, unique=True),
    Column("tenant", Text, nullable=True),
    Column("label", Text, nullable=False, server_default=""),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("last_used_at", TS, nullable=True),
    Column("revoked_at", TS, nullable=True),
    Column("expires_at", TS, nullable=True),
)

# A login in the pages (migration 0014): the cookie holds the session id,
# this table its SHA-256, never the API token itself.
web_session = Table(
    "web_session",
    metadata,
    Column("session_sha256", Text, primary_key=True),
    Column("token_id", BigInteger, ForeignKey("api_token.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("expires_at", TS, nullable=False),
    Index("web_session_expires", "expires_at"),
)
