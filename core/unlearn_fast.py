"""POST /unlearn on Postgres in one round trip, on the event loop.

The usual way (services.create_unlearn and quotas.check_tenant_queue through a Session in a worker thread)
costs a thread hop, a pool checkout with its ping, BEGIN, the model lookup, the name check, the webhook
lookup of the job's `queued` event, the inserts, the tenant's queue count and COMMIT: nine round trips, and
SQLAlchemy's unit of work around them. For the common request (sample ids given, no Idempotency-Key) this
module instead looks the model up once per process and keeps what never changes about it a minute (its id,
its data set's size, how many ids it has already forgotten), validates the input with the same functions,
and writes the forget request, the job, their `received` and `queued` events and the job's webhook
deliveries, built as the usual way builds them, in ONE autocommit statement through the API's async psycopg
pool (core.db.poll_pool). That statement writes nothing unless the model is ready, the job's name (if any)
is free and the tenant has room for one more active job: whatever it refuses, or this module does not
handle (no pool, a class instead of ids, a large id list, an unknown model, a forget set that may leave
nothing to train on, a busy pool), goes the usual way, which answers exactly as before (404, 409, 422, 429).
It raises only for bad input (the usual way's 422) and a lost database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
from cachetools import TTLCache
from psycopg import errors as pg_errors
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic_core import to_json
from sqlalchemy.exc import OperationalError

from core import idsets, jobmetrics
from core.forget_requests import received_detail, request_row
from core.services import validate_forget_ids, validate_method
from core.settings import get_settings
from core.tables import JobStatus, ModelStatus, new_id
from core.webhooks import JOB_EVENTS, JOB_FIELDS

log = logging.getLogger(__name__)

MODEL_CACHE_SECONDS = 60.0
"""How long a process keeps a model it looked up: only its id, its data set's size and how many ids it had
already forgotten, which never change (its status does: the statement checks it every time)."""
MAX_IDS = 2_000
"""Larger id lists are validated in a worker thread (the usual way), off the event loop."""
KIND = "unlearn"
QUEUED_EVENT = JOB_EVENTS["queued"]

_MODEL_SQL = (
    "SELECT m.id, d.n_train, m.forgotten_ids, octet_length(m.forgotten_ids) "
    "FROM models m JOIN datasets d ON d.id = m.dataset_id "
    "WHERE m.tenant_id = %(tenant_id)s AND (m.id = %(ref)s OR m.name = %(ref)s)"
)


def _select(columns: dict[str, str], prefix: str) -> str:
    """`%(prefix_col)s::type AS col, ...`: every value typed, as a SELECT list does not take its types from
    the table it is inserted into."""
    return ", ".join(f"%({prefix}{c})s::{t}" for c, t in columns.items())


_REQUEST = {
    "id": "varchar",
    "tenant_id": "varchar",
    "model_id": "varchar",
    "requested_by": "varchar",
    "ids": "bytea",
    "n_ids": "integer",
    "ids_sha256": "varchar",
    "method": "varchar",
    "params": "json",
    "job_id": "varchar",
    "status": "varchar",
    "external_ref": "varchar",
    "created_at": "timestamptz",
}
_JOB = {
    "id": "varchar",
    "tenant_id": "varchar",
    "kind": "varchar",
    "status": "varchar",
    "progress": "double precision",
    "progress_info": "json",
    "params": "json",
    "attempts": "integer",
    "cancel_requested": "boolean",
    "model_id": "varchar",
    "forget_request_id": "varchar",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}
_INSERT_SQL = (
    # The usual way's refusals, in one condition: not ready (or purged), the name taken, the tenant full.
    "WITH gate AS (SELECT 1 FROM models m WHERE m.id = %(r_model_id)s AND m.status = %(ready)s "
    # What it had forgotten is written once, with the model: a row changed by hand is looked up again.
    "AND octet_length(m.forgotten_ids) IS NOT DISTINCT FROM %(forgotten_bytes)s::integer "
    "AND (%(name)s::varchar IS NULL OR NOT EXISTS "
    "(SELECT 1 FROM models n WHERE n.tenant_id = %(r_tenant_id)s AND n.name = %(name)s::varchar)) "
    "AND (SELECT count(*) FROM jobs a WHERE a.tenant_id = %(r_tenant_id)s AND a.parent_id IS NULL "
    "AND a.status IN (%(queued)s, %(running)s)) < %(max_active)s), "
    f"request AS (INSERT INTO forget_requests ({', '.join(_REQUEST)}) "
    f"SELECT {_select(_REQUEST, 'r_')} FROM gate RETURNING id), "
    f"job AS (INSERT INTO jobs ({', '.join(_JOB)}) "
    f"SELECT {_select(_JOB, 'j_')} FROM request RETURNING id), "
    # Both events in the order the usual way writes them: the request's, then the job's.
    "events AS (INSERT INTO audit_events (tenant_id, at, object_type, object_id, event, detail) "
    "SELECT e.* FROM job, (VALUES "
    "(%(r_tenant_id)s::varchar, %(r_created_at)s::timestamptz, 'forget_request', %(r_id)s::varchar, "
    "'received', %(received)s::json), "
    "(%(r_tenant_id)s::varchar, %(r_created_at)s::timestamptz, 'job', %(j_id)s::varchar, "
    "'queued', %(queued_detail)s::json)) e RETURNING id), "
    # One delivery per webhook of the tenant that subscribed to the event, as core.webhooks writes them.
    "hooks AS (INSERT INTO webhook_deliveries "
    "(id, webhook_id, tenant_id, event, job_id, body, status, attempts, next_attempt_at, log, created_at) "
    "SELECT gen_random_uuid()::varchar, w.id, w.tenant_id, %(event)s::varchar, job.id, %(body)s::text, "
    "'pending', 0, %(r_created_at)s::timestamptz, '[]'::json, %(r_created_at)s::timestamptz "
    "FROM job JOIN webhooks w ON w.tenant_id = %(r_tenant_id)s AND w.events::jsonb ? %(event)s::varchar "
    "RETURNING id) "
    "SELECT id FROM job"
)
"""The request, the job, their events and the job's webhook deliveries: all of them or, when the gate refuses,
none (the usual way then answers why)."""


@dataclass(frozen=True)
class _ModelRef:
    id: str
    n_train: int
    n_forgotten: int
    forgotten_bytes: int | None


_MODELS: WeakKeyDictionary[AsyncConnectionPool, TTLCache[tuple[str, str], _ModelRef]] = WeakKeyDictionary()


def _cache(pool: AsyncConnectionPool) -> TTLCache[tuple[str, str], _ModelRef]:
    """One cache per pool, so an API started again (a new lifespan, a new database in tests) starts empty."""
    found = _MODELS.get(pool)
    if found is None:
        found = _MODELS[pool] = TTLCache(maxsize=4096, ttl=MODEL_CACHE_SECONDS)
    return found


@dataclass(frozen=True)
class Stored:
    job_id: str
    forget_request_id: str


def _job_body(job: dict[str, Any], now: datetime) -> str:
    """The `job.queued` delivery's body: the job as GET /jobs/{id} shows it, as core.webhooks writes it."""
    shown = {
        "id": job["j_id"],
        "kind": KIND,
        "status": JobStatus.queued,
        "progress": 0.0,
        "progress_info": {},
        "error": None,
        "attempts": 0,
        "model_id": job["j_model_id"],
        "forget_request_id": job["j_forget_request_id"],
        "parent_id": None,
        "result": None,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
        "updated_at": now,
    }
    assert tuple(shown) == JOB_FIELDS
    return to_json({"event": QUEUED_EVENT, "job": shown}).decode()


async def create_unlearn_async(
    pool: AsyncConnectionPool,
    *,
    tenant_id: str,
    model_ref: str,
    forget_ids: list[int] | None,
    forget_class: int | None,
    method: str,
    params: dict[str, Any] | None,
    seed: int,
    name: str | None,
    requested_by: str | None,
) -> Stored | None:
    """The job and request this call stored, or None to create them the usual way instead."""
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
        # Bad ids or a bad method raise InvalidInput here, in the usual way's order: the same 422s.
        ids: np.ndarray = validate_forget_ids(forget_ids, model.n_train)
        if ids.size + model.n_forgotten >= model.n_train:
            return None  # it may leave nothing to train on: the usual way counts exactly, and answers
        clean_params = validate_method(method, params, allow_auto=True)
        job_id = new_id()
        row = request_row(
            tenant_id=tenant_id,
            model_id=model.id,
            ids=ids,
            ids_sha256=idsets.sha256(ids),
            requested_by=requested_by,
            method=method,
            params=clean_params,
            job_id=job_id,
        )
        now = row["created_at"]
        job = {
            "j_id": job_id,
            "j_tenant_id": tenant_id,
            "j_kind": KIND,
            "j_status": JobStatus.queued.value,
            "j_progress": 0.0,
            "j_progress_info": Json({}),
            "j_params": Json({"method": method, "params": clean_params, "seed": seed, "name": name}),
            "j_attempts": 0,
            "j_cancel_requested": False,
            "j_model_id": model.id,
            "j_forget_request_id": row["id"],
            "j_created_at": now,
            "j_updated_at": now,
        }
        values = {
            **{f"r_{k}": v for k, v in row.items()},
            "r_params": Json(row["params"]),
            **job,
            "received": Json(received_detail(row, forget_class)),
            "queued_detail": Json({"kind": KIND}),
            "event": QUEUED_EVENT,
            "body": _job_body(job, now),
            "name": name,
            "ready": ModelStatus.ready.value,
            "queued": JobStatus.queued.value,
            "running": JobStatus.running.value,
            "max_active": get_settings().tenant_max_active_jobs,
            "forgotten_bytes": model.forgotten_bytes,
        }
        async with pool.connection() as conn:
            cur = await conn.execute(_INSERT_SQL, values)
            stored = await cur.fetchone()
    except PoolTimeout:
        return None  # nothing was sent: the usual way waits for its own connection
    except pg_errors.ForeignKeyViolation:
        cache.pop((tenant_id, model_ref), None)  # nothing was written; the usual way looks the model up
        return None
    except (pg_errors.OperationalError, pg_errors.InterfaceError) as exc:
        # The statement may or may not have run: answer 503 as for any lost database, never write it twice.
        raise OperationalError("unlearn request", None, exc) from exc
    if stored is None:
        # The gate refused it: the usual way answers 409 or 429 (or, if that changed, 202). The model is
        # looked up again next time, in case its row is what changed.
        cache.pop((tenant_id, model_ref), None)
        return None
    jobmetrics.ON_EVENT["queued"](jobmetrics.Moved("queued", {"kind": KIND}, KIND, None, None, None))
    return Stored(job_id=job_id, forget_request_id=row["id"])


async def _lookup(pool: AsyncConnectionPool, tenant_id: str, model_ref: str) -> _ModelRef | None:
    async with pool.connection() as conn:
        cur = await conn.execute(_MODEL_SQL, {"tenant_id": tenant_id, "ref": model_ref})
        found = await cur.fetchone()
    if found is None:
        return None
    return _ModelRef(found[0], int(found[1]), int(idsets.decode(found[2]).size), found[3])
