"""Forget requests: record the request, queue the unlearning job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from api.bodies import body_doc, json_body
from api.deps import SessionDep, TenantDep
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.schemas import UnlearnCreate, UnlearnCreated
from core import services
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
def unlearn(
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[UnlearnCreate, json_body(UnlearnCreate)],
    idempotency_key: IdempotencyHeader = None,
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
        check_tenant_queue(session, tenant, new_jobs=1, run_jobs=[])
        return UnlearnCreated(job_id=job.id, forget_request_id=request.id), [job.id], 202

    return idempotent(session, tenant, idempotency_key, "POST /unlearn", body, create)
