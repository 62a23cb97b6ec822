"""Typed dependencies: a database session per request and the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from core.auth import tenant_for
from core.db import get_sessionmaker


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="your API key (`lethe keys create`)")


def get_tenant(
    session: Annotated[Session, Depends(get_db)], key: Annotated[str | None, Security(API_KEY)]
) -> str:
    """The caller's tenant, from the X-API-Key header; 401 when it is missing or unknown."""
    tenant = tenant_for(session, key)
    if tenant is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key: send it in the X-API-Key header"
            if key
            else "missing API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )
    return tenant


SessionDep = Annotated[Session, Depends(get_db)]
TenantDep = Annotated[str, Depends(get_tenant)]
