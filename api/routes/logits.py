"""Logits as a job: a model's outputs on chosen samples, and the job's artifact to download."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from api.bodies import body_doc, json_body
from api.deps import PathRef, SessionDep, TenantDep
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.schemas import LogitsCreate, LogitsCreated
from core.artifacts import get_store
from core.errors import Conflict, NotFound
from core.extraction import artifact_key, create_logits_job
from core.jobs import get_job
from core.tables import JobStatus

router = APIRouter(tags=["logits"])


@router.post(
    "/models/{model_ref}/logits",
    status_code=202,
    response_model=LogitsCreated,
    summary="Queue a job that computes a model's logits on chosen samples",
    description="`ids` of the training split (or of `split`), a whole `split`, or the ids a "
    "`forget_request_id` named. The job writes logits.npz: `logits` float32 [n, outputs], `ids` [n] "
    "(ascending) and `labels` [n]; download it at GET /jobs/{id}/artifacts/logits.npz once it succeeded.",
    openapi_extra=body_doc(LogitsCreate),
)
def create_logits(
    model_ref: PathRef,
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[LogitsCreate, json_body(LogitsCreate)],
    idempotency_key: IdempotencyHeader = None,
) -> LogitsCreated:
    def create() -> Created:
        job = create_logits_job(
            session,
            tenant_id=tenant,
            model_ref=model_ref,
            ids=body.ids,
            split=body.split,
            forget_request_id=body.forget_request_id,
        )
        return LogitsCreated(job_id=job.id), [job.id], 202

    return idempotent(session, tenant, idempotency_key, f"POST /models/{model_ref}/logits", body, create)


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    summary="Download an artifact a job wrote (logits.npz of a logits job)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the artifact's bytes"}},
)
def get_artifact(job_id: str, name: str, session: SessionDep, tenant: TenantDep) -> Response:
    """The bytes of an artifact a succeeded job lists in its result (`ETag` its sha256); 409 while the job is queued or running."""
    job = get_job(session, job_id, tenant)
    if job.status != JobStatus.succeeded:
        if job.status in (JobStatus.queued, JobStatus.running):
            raise Conflict(f"job {job_id} is {job.status}: its artifacts exist once it has succeeded")
        raise NotFound(f"job {job_id} {job.status}: it wrote no artifacts")
    if name not in (job.result or {}).get("artifacts", []):
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    data = get_store().read_bytes(artifact_key(job.id))
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{job.kind}-{job.id}-{name}"',
            "ETag": f'"{job.result["sha256"]}"',
        },
    )
