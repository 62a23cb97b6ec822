"""Typed dependencies: a database session per request and the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from core.db import get_sessionmaker
from core.tables import DEFAULT_TENANT


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


def get_tenant() -> str:
    """The caller's tenant (a single local tenant until API keys exist)."""
    return DEFAULT_TENANT


SessionDep = Annotated[Session, Depends(get_db)]
TenantDep = Annotated[str, Depends(get_tenant)]
