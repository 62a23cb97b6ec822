"""Typed dependencies: a database session per request and the caller's tenant.

Both are cheap on the hot path: the tenant of a key checked in the last few seconds comes from memory
(`auth_cache_seconds`), and the session is created on the event loop (no I/O until first use) and closed
in one worker-thread hop; GET and HEAD requests get read-only sessions, which on SQLite do not queue for
the write lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Annotated

from cachetools import TTLCache
from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from api.limits import check_rate, passed_on
from api.schemas import NO_NUL
from core.auth import digest, tenant_for_digest
from core.db import get_read_sessionmaker, get_sessionmaker, read_session
from core.settings import get_settings

READ_METHODS = frozenset({"GET", "HEAD"})


async def get_db(request: Request) -> AsyncIterator[Session]:
    maker = get_read_sessionmaker() if request.method in READ_METHODS else get_sessionmaker()
    session = maker()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="your API key (`lethe keys create`)")


class TenantCache:
    """Key digest -> tenant for keys found valid in the last `ttl` seconds (unknown keys are not kept)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: TTLCache[str, str] | None = None

    def _store(self) -> TTLCache[str, str] | None:
        if self._cache is None:
            ttl = get_settings().auth_cache_seconds
            if ttl <= 0:
                return None
            self._cache = TTLCache(maxsize=4096, ttl=ttl)
        return self._cache

    def get(self, key_digest: str) -> str | None:
        with self._lock:
            store = self._store()
            return store.get(key_digest) if store is not None else None

    def put(self, key_digest: str, tenant: str) -> None:
        with self._lock:
            store = self._store()
            if store is not None:
                store[key_digest] = tenant

    def clear(self) -> None:
        with self._lock:
            self._cache = None


TENANTS = TenantCache()

KEY_HEADER = b"x-api-key"
"""The API key's header as an ASGI scope lists it (lower case), for the fast paths that read it there."""


def cached_tenant(key: bytes) -> str | None:
    """The tenant of a raw X-API-Key value checked in the last few seconds; None when not cached (no lookup)."""
    return TENANTS.get(digest(key.decode("latin-1")))


_LOOKUPS: dict[tuple[int, str], asyncio.Task[str | None]] = {}
"""Lookups in flight, by (event loop, key digest): when a key's cache entry expires, every client using the
key misses at once; one lookup (its own task, so that no request's disconnect cancels it) answers them all,
one database query and one worker thread instead of one each."""


def _lookup(key_digest: str) -> str | None:
    with read_session() as session:
        tenant = tenant_for_digest(session, key_digest)
    if tenant is not None:
        TENANTS.put(key_digest, tenant)
    return tenant


async def _tenant_of(key_digest: str) -> str | None:
    """The tenant of a key digest from the cache, else from the database, one lookup per digest at a time."""
    tenant = TENANTS.get(key_digest)
    if tenant is not None:
        return tenant
    loop = asyncio.get_running_loop()
    slot = (id(loop), key_digest)
    task = _LOOKUPS.get(slot)
    if task is None:
        task = loop.create_task(run_in_threadpool(_lookup, key_digest))
        _LOOKUPS[slot] = task
        task.add_done_callback(lambda done: _lookup_done(slot, done))
    return await asyncio.shield(task)


def _lookup_done(slot: tuple[int, str], task: asyncio.Task[str | None]) -> None:
    _LOOKUPS.pop(slot, None)
    if not task.cancelled():
        task.exception()  # retrieved: a failed lookup whose callers all left must not warn as unretrieved


async def get_tenant(key: Annotated[str | None, Security(API_KEY)]) -> str:
    """The caller's tenant, from the X-API-Key header; 401 when it is missing or unknown, 429 when the
    tenant is over its rate limit (one dependency for both, as every dependency adds to each request's cost)."""
    tenant = await _tenant_of(digest(key)) if key else None
    if tenant is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API key: send it in the X-API-Key header"
            if key
            else "missing API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )
    if not passed_on(tenant):  # else the POST fast path counted it already (api.fastpost)
        await check_rate(tenant)
    return tenant


SessionDep = Annotated[Session, Depends(get_db)]
TenantDep = Annotated[str, Depends(get_tenant)]
PathRef = Annotated[
    str, Path(min_length=1, max_length=100, pattern=NO_NUL, description="an id (or a model's name)")
]
