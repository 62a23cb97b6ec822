"""Forget-request intake and forget policies: take requests in now, forget them together later."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.bodies import body_doc, json_body, nul_at
from api.deps import SessionDep, TenantDep
from api.fastpost import HotPost, route_of
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.limits import passed_on
from api.pagination import Cursor, Limit, page
from api.schemas import (
    ForgetPolicyIn,
    ForgetPolicyPublic,
    ForgetRequestCreate,
    ForgetRequestCreated,
    ForgetRequestList,
    ForgetRequestRow,
)
from core import intake, intake_fast
from core.db import get_sessionmaker, has_poll_pool, poll_pool
from core.errors import NotFound
from core.tables import ForgetPolicy, ForgetRequest, RequestStatus

router = APIRouter(tags=["unlearn"])


@router.post(
    "/forget-requests",
    status_code=202,
    response_model=ForgetRequestCreated,
    summary="Record a forget request; the model's forget policy forgets it in the next batch",
    description="Validates the request as POST /unlearn does, stores it and its audit event, and starts no job. "
    "The same `external_ref` (or Idempotency-Key) again returns the same request, with 200; a different "
    "request under it is a 409.",
    responses={200: {"model": ForgetRequestCreated, "description": "this external_ref was already taken in"}},
)
async def create_forget_request(
    body: ForgetRequestCreate,
    tenant: TenantDep,
    idempotency_key: IdempotencyHeader = None,
) -> BaseModel | JSONResponse:
    # The hot path: one statement on the event loop, unless the POST fast path tried it already.
    if idempotency_key is None and not passed_on(tenant):
        answer = await create_fast(body, tenant)
        if answer is not None:
            return answer
    return await run_in_threadpool(_create_in_session, body, tenant, idempotency_key)


async def create_fast(body: ForgetRequestCreate, tenant: str) -> JSONResponse | None:
    """The request stored in one statement on the event loop (core.intake_fast), answered; None where the
    usual way must take it in. Without an Idempotency-Key only."""
    pool = poll_pool()
    if pool is None:
        return None
    stored = await intake_fast.take_in_async(pool, tenant_id=tenant, **_asked(body))
    if stored is None:
        return None
    return JSONResponse({"forget_request_id": stored, "status": RequestStatus.pending}, status_code=202)


def _asked(body: ForgetRequestCreate) -> dict[str, Any]:
    """The request as core's intake takes it, the same on the one-statement path and the usual way."""
    return {
        "model_ref": body.model_id,
        "forget_ids": body.forget_ids,
        "forget_class": body.forget_class,
        "requested_by": body.requested_by,
        "external_ref": body.external_ref,
    }


def parse_fast(raw: bytes) -> ForgetRequestCreate:
    """The body as the route reads it (JSON, then the model's lax validation); raises for whatever it refuses,
    and for strings holding a NUL character, which the route answers itself."""
    data = pydantic_core.from_json(raw)
    if nul_at(data) is not None:
        raise ValueError("a string holds a NUL character")
    return ForgetRequestCreate.model_validate(data)


HOT_POST = HotPost(
    route=route_of(router.routes, create_forget_request),
    parse=parse_fast,
    answer=create_fast,
    ready=has_poll_pool,
)
"""POST /forget-requests for the POST fast path (api.fastpost)."""


def _create_in_session(
    body: ForgetRequestCreate, tenant: str, idempotency_key: str | None
) -> BaseModel | JSONResponse:
    with get_sessionmaker()() as session:
        return _create(session, body, tenant, idempotency_key)


def _create(
    session: Session, body: ForgetRequestCreate, tenant: str, idempotency_key: str | None
) -> BaseModel | JSONResponse:
    """Store the request through the ORM, with the Idempotency-Key's answer and the external_ref race."""

    def take_in() -> intake.Intake:
        return intake.take_in(session, tenant_id=tenant, **_asked(body))

    def create() -> Created:
        taken = take_in()
        answer = ForgetRequestCreated(forget_request_id=taken.request.id, status=taken.request.status)
        return answer, [], 202 if taken.created else 200

    try:
        return idempotent(session, tenant, idempotency_key, "POST /forget-requests", body, create)
    except IntegrityError:
        # A concurrent request with the same external_ref was stored first: answer with that one (or a 409).
        session.rollback()
        retried = take_in()
        if retried.created:
            raise
        answer = ForgetRequestCreated(forget_request_id=retried.request.id, status=retried.request.status)
        return JSONResponse(answer.model_dump(mode="json"), status_code=200)


@router.get(
    "/forget-requests",
    response_model=ForgetRequestList,
    summary="Forget requests, oldest first, by status and model, a page at a time",
)
def list_forget_requests(
    session: SessionDep,
    tenant: TenantDep,
    status: Annotated[RequestStatus | None, Query()] = None,
    model_id: Annotated[str | None, Query(max_length=100, description="model id or name")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ForgetRequestList:
    """The caller's requests in the order they came; count covers every match, next_cursor the next page."""
    stmt = intake.requests_query(session, tenant_id=tenant, status=status, model_ref=model_id)
    rows, total, next_cursor = page(
        session,
        stmt,
        [ForgetRequest.created_at, ForgetRequest.id],
        limit=limit,
        cursor=cursor,
        descending=False,
    )
    return ForgetRequestList(
        data=[ForgetRequestRow.model_validate(r, from_attributes=True) for r in rows],
        count=total,
        next_cursor=next_cursor,
    )


def _policy_public(session: SessionDep, policy: ForgetPolicy) -> ForgetPolicyPublic:
    return ForgetPolicyPublic(
        model_id=policy.model_id,
        method=policy.method,
        params=policy.params,
        window_seconds=policy.window_seconds,
        max_requests=policy.max_requests,
        max_samples=policy.max_samples,
        evaluate=policy.evaluate,
        head_model_id=policy.head_model_id,
        running_job_id=policy.running_job_id,
        pending=intake.pending_count(session, policy.model_id),
        updated_at=policy.updated_at,
    )


@router.put(
    "/models/{model_id}/forget-policy",
    response_model=ForgetPolicyPublic,
    summary="Set how and when the model's pending forget requests are forgotten together",
    openapi_extra=body_doc(ForgetPolicyIn),
)
def put_forget_policy(
    model_id: str,
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[ForgetPolicyIn, json_body(ForgetPolicyIn)],
) -> ForgetPolicyPublic:
    """Create or replace the policy; requests already pending follow it from the next sweep."""
    policy = intake.put_policy(
        session,
        tenant_id=tenant,
        model_ref=model_id,
        method=body.method,
        params=body.params,
        window_seconds=body.window_seconds,
        max_requests=body.max_requests,
        max_samples=body.max_samples,
        evaluate=body.evaluate,
    )
    session.commit()
    return _policy_public(session, policy)


@router.get(
    "/models/{model_id}/forget-policy",
    response_model=ForgetPolicyPublic,
    summary="The model's forget policy, its newest version and the batch in flight",
)
def read_forget_policy(model_id: str, session: SessionDep, tenant: TenantDep) -> ForgetPolicyPublic:
    """404 when the model has none: its forget requests then stay pending until one is set."""
    policy = intake.get_policy(session, tenant, model_id)
    if policy is None:
        raise NotFound(f"model {model_id!r} has no forget policy: its forget requests stay pending")
    return _policy_public(session, policy)
