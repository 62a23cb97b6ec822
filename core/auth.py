"""API keys: random secrets shown once, stored as sha256, each belonging to one tenant.

Dashboard sessions: a browser signs in once with a key and then carries only a random session token,
stored as its sha256 too; a session ends when it expires, when its browser signs out, or when its key is
revoked."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput, NotFound
from core.jobs import audit
from core.tables import ApiKey, DashboardSession, Tenant, utcnow

KEY_PREFIX = "lethe_"
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def digest(key: str) -> str:
    """What is stored of a key: its sha256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, tenant_id: str) -> str:
    """A new key for the tenant (created if new); the plaintext is returned once and never stored."""
    if not TENANT_NAME.match(tenant_id):
        raise InvalidInput("tenant", "tenant names are 1-64 letters, digits, '_', '.' or '-'")
    if session.get(Tenant, tenant_id) is None:
        session.add(Tenant(id=tenant_id))
        session.flush()
        audit(session, "tenant", tenant_id, "created", tenant_id)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(tenant_id=tenant_id, prefix=key[: len(KEY_PREFIX) + 4], key_sha256=digest(key))
    session.add(row)
    session.flush()
    audit(session, "api_key", row.id, "created", tenant_id, prefix=row.prefix)
    return key


def tenant_for(session: Session, key: str | None) -> str | None:
    """The tenant a key belongs to, or None for a missing, unknown or revoked key."""
    return tenant_for_digest(session, digest(key)) if key else None


def tenant_for_digest(session: Session, key_digest: str) -> str | None:
    """The tenant of the unrevoked key with this sha256 digest, or None."""
    return session.execute(
        select(ApiKey.tenant_id).where(ApiKey.key_sha256 == key_digest, ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()


def list_keys(session: Session, tenant_id: str | None = None) -> list[ApiKey]:
    """Keys (their prefixes and dates, never secrets), oldest first, of one tenant or all."""
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant_id is not None:
        stmt = stmt.where(ApiKey.tenant_id == tenant_id)
    return list(session.execute(stmt).scalars())


def revoke_key(session: Session, key_or_prefix: str) -> ApiKey:
    """Revoke a key named by the whole key or its shown prefix (`lethe_` and 4 characters).

    NotFound when nothing matches; Conflict when a prefix matches several keys (give the whole key) or the
    key is already revoked. API processes that checked the key within auth_cache_seconds accept it that
    much longer."""
    whole = key_or_prefix.startswith(KEY_PREFIX) and len(key_or_prefix) > len(KEY_PREFIX) + 4
    named = ApiKey.key_sha256 == digest(key_or_prefix) if whole else ApiKey.prefix == key_or_prefix
    matches = list(session.execute(select(ApiKey).where(named)).scalars())
    if not matches:
        raise NotFound(f"no API key {key_or_prefix!r}")
    if len(matches) > 1:
        raise Conflict(f"{len(matches)} keys start with {key_or_prefix!r}: give the whole key")
    row = matches[0]
    if row.revoked_at is not None:
        raise Conflict(f"key {row.prefix} was already revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}")
    row.revoked_at = utcnow()
    audit(session, "api_key", row.id, "revoked", row.tenant_id, prefix=row.prefix)
    session.execute(
        update(DashboardSession)
        .where(DashboardSession.api_key_id == row.id, DashboardSession.ended_at.is_(None))
        .values(ended_at=row.revoked_at)
    )
    return row


PRUNE_AFTER = timedelta(days=1)
"""Expired sessions are deleted this long after they expire (the audit trail keeps their sign-in)."""


def start_session(session: Session, key: str, lifetime: timedelta) -> tuple[str, str] | None:
    """Sign a browser in with a key: (the session token for its cookie, the tenant), or None for a bad key."""
    row = session.execute(
        select(ApiKey).where(ApiKey.key_sha256 == digest(key), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        return None
    now = utcnow()
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at < now - PRUNE_AFTER))
    token = secrets.token_urlsafe(32)
    signed_in = DashboardSession(
        token_sha256=digest(token),
        tenant_id=row.tenant_id,
        api_key_id=row.id,
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(signed_in)
    session.flush()
    audit(
        session,
        "dashboard_session",
        signed_in.id,
        "signed_in",
        row.tenant_id,
        key_prefix=row.prefix,
        expires_at=signed_in.expires_at.isoformat(timespec="seconds"),
    )
    return token, row.tenant_id


def tenant_for_session(session: Session, token: str | None) -> str | None:
    """The tenant of a live session (not ended, not expired, its key not revoked), or None."""
    if not token:
        return None
    return session.execute(
        select(DashboardSession.tenant_id)
        .join(ApiKey, ApiKey.id == DashboardSession.api_key_id)
        .where(
            DashboardSession.token_sha256 == digest(token),
            DashboardSession.ended_at.is_(None),
            DashboardSession.expires_at > utcnow(),
            ApiKey.revoked_at.is_(None),
        )
    ).scalar_one_or_none()


def end_session(session: Session, token: str) -> bool:
    """Sign a browser out; False when its session had already ended."""
    row = session.execute(
        select(DashboardSession).where(
            DashboardSession.token_sha256 == digest(token), DashboardSession.ended_at.is_(None)
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    row.ended_at = utcnow()
    audit(session, "dashboard_session", row.id, "signed_out", row.tenant_id)
    return True
