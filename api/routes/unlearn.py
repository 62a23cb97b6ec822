"""Forget requests: record the request, queue the unlearning job."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.schemas import UnlearnCreate, UnlearnCreated
from core import services

router = APIRouter(tags=["unlearn"])


@router.post(
    "/unlearn",
    status_code=202,
    response_model=UnlearnCreated,
    summary="Make a model forget training samples",
    description="Validates everything, records the forget request, then queues a job that writes a new "
    "child model; the parent model is never modified.",
)
def unlearn(
    body: UnlearnCreate, session: SessionDep, tenant: TenantDep, idempotency_key: IdempotencyHeader = None
) -> UnlearnCreated:
    def create() -> Created:
        job, request = services.create_unlearn(
            session,
            tenant_id=tenant,
            model_ref=body.model_id,
            forget_ids=body.forget_ids,
            forget_class=body.forget_class,
            method=body.method,
            params=body.params,
            seed=body.seed,
            name=body.name,
            requested_by=body.requested_by,
        )
        return UnlearnCreated(job_id=job.id, forget_request_id=request.id), [job.id], 202

    return idempotent(session, tenant, idempotency_key, "POST /unlearn", body, create)
