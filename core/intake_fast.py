"""Forget-request intake on Postgres in one round trip, on the event loop.

The usual way (core.intake.take_in through a Session in a worker thread) costs a thread hop, a pool
checkout with its ping, BEGIN, the model lookup, two inserts and COMMIT: six round trips to the
database, and SQLAlchemy's unit of work around them. For the common request (sample ids given, no
Idempotency-Key) this module instead looks the model up once per process and keeps it a few seconds (a
model's id, name and data set never change), validates the ids with the same function, and writes the
request and its `received` event, built by the same functions, in one autocommit statement through the
API's async psycopg pool (core.db.poll_pool). Whatever it does not handle (no pool, a class instead of
ids, a large id list, an unknown model, an external_ref already taken, a pool that is busy) it leaves to
the usual way, which answers exactly as before; it raises only for bad ids and a lost database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
from cachetools import TTLCache
from psycopg import errors as pg_errors
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.exc import OperationalError

from core import idsets
from core.forget_requests import received_detail, request_row
from core.services import validate_forget_ids
from core.tables import RequestStatus

log = logging.getLogger(__name__)

MODEL_CACHE_SECONDS = 60.0
"""How long a process keeps a model it looked up: only its id and its data set's size, which never change (a
model is never deleted: a stale entry would fail the insert's foreign key and go the usual way)."""
MAX_IDS = 2_000
"""Larger id lists are validated in a worker thread (the usual way), off the event loop."""

_MODEL_SQL = (
    "SELECT m.id, d.n_train FROM models m JOIN datasets d ON d.id = m.dataset_id "
    "WHERE m.tenant_id = %(tenant_id)s AND (m.id = %(ref)s OR m.name = %(ref)s)"
)
_COLUMNS = (
    "id",
    "tenant_id",
    "model_id",
    "requested_by",
    "ids",
    "n_ids",
    "ids_sha256",
    "method",
    "params",
    "job_id",
    "status",
    "external_ref",
    "created_at",
)
_INSERT_SQL = (
    "WITH request AS ("
    f"INSERT INTO forget_requests ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'%({c})s' for c in _COLUMNS)}) "
    "ON CONFLICT (tenant_id, external_ref) DO NOTHING RETURNING id) "
    "INSERT INTO audit_events (tenant_id, at, object_type, object_id, event, detail) "
    "SELECT %(tenant_id)s, %(created_at)s, 'forget_request', id, 'received', %(detail)s FROM request "
    "RETURNING object_id"
)
"""The request and its audit event in one statement: both or neither, and neither when the tenant's
external_ref is already taken (the usual way then answers with the stored request, or a 409)."""


@dataclass(frozen=True)
class _ModelRef:
    id: str
    n_train: int


_MODELS: WeakKeyDictionary[AsyncConnectionPool, TTLCache[tuple[str, str], _ModelRef]] = WeakKeyDictionary()


def _cache(pool: AsyncConnectionPool) -> TTLCache[tuple[str, str], _ModelRef]:
    """One cache per pool, so an API started again (a new lifespan, a new database in tests) starts empty."""
    found = _MODELS.get(pool)
    if found is None:
        found = _MODELS[pool] = TTLCache(maxsize=4096, ttl=MODEL_CACHE_SECONDS)
    return found


async def take_in_async(
    pool: AsyncConnectionPool,
    *,
    tenant_id: str,
    model_ref: str,
    forget_ids: list[int] | None,
    forget_class: int | None,
    requested_by: str | None,
    external_ref: str | None,
) -> str | None:
    """The id of the pending request this call stored, or None to take it in the usual way instead."""
    if forget_ids is None or forget_class is not None or len(forget_ids) > MAX_IDS:
        return None
    cache = _cache(pool)
    model = cache.get((tenant_id, model_ref))
    try:
        if model is None:
            model = await _lookup(pool, tenant_id, model_ref)
            if model is None:
                return None  # the usual way answers 404
            cache[(tenant_id, model_ref)] = model
        # Bad ids raise InvalidInput here: the same 422 the usual way answers, and nothing is stored.
        ids: np.ndarray = validate_forget_ids(forget_ids, model.n_train)
        row = request_row(
            tenant_id=tenant_id,
            model_id=model.id,
            ids=ids,
            ids_sha256=idsets.sha256(ids),
            requested_by=requested_by,
            status=RequestStatus.pending,
            external_ref=external_ref,
        )
        detail = received_detail(row, forget_class, batched=True)
        async with pool.connection() as conn:
            cur = await conn.execute(
                _INSERT_SQL, {**row, "params": Json(row["params"]), "detail": Json(detail)}
            )
            stored = await cur.fetchone()
    except PoolTimeout:
        return None  # nothing was sent: the usual way waits for its own connection
    except pg_errors.ForeignKeyViolation:
        cache.pop((tenant_id, model_ref), None)  # nothing was written; the usual way looks the model up
        return None
    except (pg_errors.OperationalError, pg_errors.InterfaceError) as exc:
        # The statement may or may not have run: answer 503 as for any lost database, never write it twice.
        raise OperationalError("forget request intake", None, exc) from exc
    return stored[0] if stored else None


async def _lookup(pool: AsyncConnectionPool, tenant_id: str, model_ref: str) -> _ModelRef | None:
    async with pool.connection() as conn:
        cur = await conn.execute(_MODEL_SQL, {"tenant_id": tenant_id, "ref": model_ref})
        found = await cur.fetchone()
    return _ModelRef(found[0], int(found[1])) if found else None
