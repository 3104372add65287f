"""Who may read what: API tokens and the PostgreSQL role each tenant reads as.

A token is 32 random bytes shown once at creation; only its SHA-256 is kept
(a token is random, not a password, so a slow hash would add nothing), and
it may expire. A tenant token's queries run under the tenant's own role,
where row-level security (migration 0009) hides every other tenant's rows;
an admin token's run as the pipeline's own login and see every tenant.

Logging in to the pages makes a session: the cookie holds a random session
id whose SHA-256 is stored with the token it stands for and an expiry, so
the token itself never travels in a cookie, and revoking the token or
logging out ends the session at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Connection, Engine, text

PREFIX: Final = "fo_"
READER: Final = "finops_tenant_reader"


@dataclass(frozen=True)
class Principal:
    token_id: int
    tenant: str | None  # None: admin

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def may_read(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant


@dataclass(frozen=True)
class TokenInfo:
    id: int
    tenant: str | None
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def role_name(tenant: str) -> str:
    """The tenant's role: a fixed prefix and hex digits, so it never needs
    quoting whatever the tenant is called."""
    return "finops_tenant_" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


def ensure_role(conn: Connection, tenant: str) -> str:
    role = role_name(tenant)
    # Role names cannot be bound parameters; this one is built from hex only.
    conn.execute(
        text(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"'{role}') THEN CREATE ROLE {role} NOLOGIN IN ROLE {READER}; END IF; END $$"
        )
    )
    conn.execute(
        text(
            "INSERT INTO tenant_role (role_name, tenant) VALUES (:r, :t)"
            " ON CONFLICT (role_name) DO NOTHING"
        ),
        {"r": role, "t": tenant},
    )
    return role


def create_token(
    engine: Engine, tenant: str | None, label: str = "", expires_in: timedelta | None = None
) -> tuple[int, str]:
    """A new token for ``tenant`` (None: admin), valid for ``expires_in``
    (None: until revoked): its id and the secret, which is not stored and
    cannot be shown again."""
    secret = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if tenant is not None:
            ensure_role(conn, tenant)
        token_id = conn.execute(
            text(
                "INSERT INTO api_token (token_sha256, tenant, label, expires_at)"
                " VALUES (:h, :t, :l, now() + CAST(:e AS interval)) RETURNING id"
            ),
            {"h": digest(secret), "t": tenant, "l": label, "e": expires_in},
        ).scalar_one()
    return int(token_id), secret


def revoke_token(engine: Engine, token_id: int) -> bool:
    with engine.begin() as conn:
        done = conn.execute(
            text("UPDATE api_token SET revoked_at = now() WHERE id = :i AND revoked_at IS NULL"),
            {"i": token_id},
        ).rowcount
    return bool(done)


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, tenant, label, created_at, last_used_at, revoked_at, expires_at"
                " FROM api_token ORDER BY id"
            )
        ).all()
    return [TokenInfo(*row) for row in rows]


_LIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


def authenticate(engine: Engine, token: str) -> Principal | None:
    """The principal of a live token (not revoked, not expired), or None."""
    if not token.startswith(PREFIX):
        return None
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE api_token SET last_used_at = now()"
                f" WHERE token_sha256 = :h AND {_LIVE} RETURNING id, tenant"
            ),
            {"h": digest(token)},
        ).first()
    return None if row is None else Principal(int(row[0]), row[1])


def open_session(engine: Engine, principal: Principal, lasts: timedelta) -> str:
    """A new login session for ``principal``'s token: the id to set in the
    cookie (only its SHA-256 is stored)."""
    session = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO web_session (session_sha256, token_id, expires_at)"
                " VALUES (:h, :t, now() + :d)"
            ),
            {"h": digest(session), "t": principal.token_id, "d": lasts},
        )
        # Sessions that ended are of no use to anyone: tidy them as we go.
        conn.execute(text("DELETE FROM web_session WHERE expires_at < now()"))
    return session


def session_principal(engine: Engine, session: str) -> Principal | None:
    """Who a session cookie stands for, while both it and its token live."""
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT t.id, t.tenant FROM web_session s JOIN api_token t ON t.id = s.token_id"
                " WHERE s.session_sha256 = :h AND s.expires_at > now()"
                " AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())"
            ),
            {"h": digest(session)},
        ).first()
    return None if row is None else Principal(int(row[0]), row[1])


def close_session(engine: Engine, session: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM web_session WHERE session_sha256 = :h"), {"h": digest(session)}
        )


def read_as(conn: Connection, principal: Principal) -> None:
    """Make the rest of ``conn``'s transaction read as ``principal``: a
    tenant's role (row-level security applies) or, for admin, unchanged."""
    if principal.tenant is not None:
        conn.execute(
            text("SELECT set_config('role', :r, true)"), {"r": role_name(principal.tenant)}
        )
