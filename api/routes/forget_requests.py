"""The audit view of a deletion request: who asked, when, what was done, with every state change."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import or_, select

from api.deps import PathRef, SessionDep, TenantDep
from api.schemas import AuditEntry, ForgetRequestPublic
from core.batching import BATCH_KIND, batch_info
from core.services import get_owned
from core.tables import AuditEvent, ForgetRequest, Job, Model

router = APIRouter(prefix="/forget-requests", tags=["unlearn"])


@router.get(
    "/{request_id}", response_model=ForgetRequestPublic, summary="A forget request and its audit trail"
)
def read_forget_request(request_id: PathRef, session: SessionDep, tenant: TenantDep) -> ForgetRequestPublic:
    """Who asked and when, how many ids and their sha256, the method, every state change with its time and reason, and the resulting model with its metrics."""
    req = get_owned(session, ForgetRequest, request_id, tenant, "forget request")
    job = session.get(Job, req.job_id) if req.job_id else None
    model = session.get(Model, req.result_model_id) if req.result_model_id else None
    ids = [req.id] + ([job.id] if job else []) + ([model.id] if model else [])
    events = session.execute(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant, or_(*(AuditEvent.object_id == i for i in ids)))
        .order_by(AuditEvent.id)
    ).scalars()
    return ForgetRequestPublic(
        id=req.id,
        tenant=req.tenant_id,
        requested_by=req.requested_by,
        created_at=req.created_at,
        model_id=req.model_id,
        n_ids=req.n_ids,
        ids_sha256=req.ids_sha256,
        method=req.method,
        params=req.params,
        job_id=req.job_id,
        status=req.status or (job.status if job else None),
        error=req.reason or (job.error if job else None),
        result_model_id=req.result_model_id,
        result_metrics=model.metrics if model else None,
        events=[AuditEntry.model_validate(e, from_attributes=True) for e in events],
        external_ref=req.external_ref,
        batch=batch_info(session, job) if job and job.kind == BATCH_KIND else None,
    )
