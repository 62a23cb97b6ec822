"""Forget requests: record the request, queue the unlearning job."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from api import bodies
from api.bodies import body_doc
from api.deps import TenantDep
from api.fastpost import HotPost, route_of
from api.idempotency import Created, IdempotencyHeader, accepted_headers, idempotent
from api.limits import passed_on
from api.schemas import UnlearnCreate, UnlearnCreated
from core import services, unlearn_fast
from core.db import get_sessionmaker, has_poll_pool, poll_pool
from core.queue import DISPATCHER
from core.quotas import check_tenant_queue

router = APIRouter(tags=["unlearn"])


@router.post(
    "/unlearn",
    status_code=202,
    response_model=UnlearnCreated,
    summary="Make a model forget training samples",
    description="Validates everything, records the forget request, then queues a job that writes a new "
    "child model; the parent model is never modified. 409 while the model is not ready.",
    openapi_extra=body_doc(UnlearnCreate),
)
async def unlearn(
    request: Request,
    tenant: TenantDep,
    idempotency_key: IdempotencyHeader = None,
) -> BaseModel | JSONResponse:
    raw = await request.body()
    if len(raw) <= bodies.SMALL_BODY:
        body = bodies.parse_body(UnlearnCreate, raw)
    else:
        body = await run_in_threadpool(bodies.parse_body, UnlearnCreate, raw)
    # The hot path: one statement on the event loop, unless the POST fast path tried it already.
    if idempotency_key is None and not passed_on(tenant):
        answer = await unlearn_fast_answer(body, tenant)
        if answer is not None:
            return answer
    return await run_in_threadpool(_unlearn_in_session, body, tenant, idempotency_key)


async def unlearn_fast_answer(body: UnlearnCreate, tenant: str) -> JSONResponse | None:
    """The request and its job stored in one statement on the event loop (core.unlearn_fast), answered, the
    job published once the answer is out; None where the usual way must. Without an Idempotency-Key only."""
    pool = poll_pool()
    if pool is None:
        return None
    stored = await unlearn_fast.create_unlearn_async(pool, tenant_id=tenant, **_asked(body))
    if stored is None:
        return None
    answer = {"job_id": stored.job_id, "forget_request_id": stored.forget_request_id}
    return JSONResponse(
        answer,
        status_code=202,
        headers=accepted_headers(202, answer),
        # From the process's dispatcher thread, batched with other requests'.
        background=BackgroundTask(DISPATCHER.publish_async, stored.job_id, unlearn_fast.KIND),
    )


def _asked(body: UnlearnCreate) -> dict[str, Any]:
    """The request as core creates it, the same on the one-statement path and the usual way."""
    return {
        "model_ref": body.model_id,
        "forget_ids": body.forget_ids,
        "forget_class": body.forget_class,
        "method": body.method,
        "params": body.params,
        "seed": body.seed,
        "name": body.name,
        "requested_by": body.requested_by,
    }


HOT_POST = HotPost(
    route=route_of(router.routes, unlearn),
    parse=partial(bodies.parse_body, UnlearnCreate),
    answer=unlearn_fast_answer,
    ready=has_poll_pool,
)
"""POST /unlearn for the POST fast path (api.fastpost)."""


def _unlearn_in_session(
    body: UnlearnCreate, tenant: str, idempotency_key: str | None
) -> BaseModel | JSONResponse:
    with get_sessionmaker()() as session:

        def create() -> Created:
            job, request = services.create_unlearn(session, tenant_id=tenant, **_asked(body))
            check_tenant_queue(session, tenant, new_jobs=1, run_jobs=[])
            return UnlearnCreated(job_id=job.id, forget_request_id=request.id), [job.id], 202

        return idempotent(session, tenant, idempotency_key, "POST /unlearn", body, create)
