"""Jobs: state, progress, result and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection
from starlette.routing import BaseRoute

from api.deps import PathRef, SessionDep, TenantDep
from api.fastpost import route_of
from api.pagination import Cursor, Limit, page
from api.schemas import NO_NUL, JobList, JobMetrics, JobPublic
from core import jobs as job_service
from core.db import read_connection
from core.errors import NotFound
from core.jobs import get_job, job_fields, job_fields_async
from core.services import resolve_model
from core.tables import Job, JobStatus

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get(
    "",
    response_model=JobList,
    summary="Jobs, newest first, optionally by status, kind, model, id prefix, or top-level only",
)
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    status: Annotated[JobStatus | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=30, pattern=NO_NUL)] = None,
    model_id: Annotated[
        str | None,
        Query(min_length=1, max_length=100, pattern=NO_NUL, description="a model's id or name: its jobs"),
    ] = None,
    top_level: Annotated[
        bool,
        Query(description="leave out the runs of other jobs (an evaluation's seeds, a study's evaluations)"),
    ] = False,
    id_prefix: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=36,
            pattern=r"^[0-9a-fA-F-]+$",
            description="the first characters of a job's id (the command line's short ids)",
        ),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobList:
    """The caller's jobs, newest first, filtered by every parameter given; count covers every match, and next_cursor leads to the next page. Without filters every job is listed, the runs of evaluations and studies included."""
    model = None if model_id is None else resolve_model(session, model_id, tenant).id
    stmt = job_service.jobs_query(
        tenant, status=status, kind=kind, model_id=model, top_level=top_level, id_prefix=id_prefix
    )
    rows, total, next_cursor = page(
        session, stmt, [Job.created_at, Job.id], limit=limit, cursor=cursor, descending=True
    )
    return JobList(
        data=[JobPublic.model_validate(j, from_attributes=True) for j in rows],
        count=total,
        next_cursor=next_cursor,
    )


def job_json(conn: Connection, job_id: str, tenant: str) -> str:
    """A tenant's job as JobPublic JSON (NotFound for a missing job or another tenant's)."""
    return JobPublic.model_validate(
        job_fields(conn, job_id, tenant, JobPublic.model_fields)
    ).model_dump_json()


async def job_json_async(pool: AsyncConnectionPool, job_id: str, tenant: str) -> str:
    """job_json read on the event loop through the Postgres poll pool."""
    return JobPublic.model_validate(
        await job_fields_async(pool, job_id, tenant, JobPublic.model_fields)
    ).model_dump_json()


def read_job_json(job_id: str, tenant: str) -> str:
    with read_connection() as conn:
        return job_json(conn, job_id, tenant)


@router.get("/{job_id}", response_model=JobPublic, summary="A job's state and progress")
async def read_job(job_id: PathRef, tenant: TenantDep) -> Response:
    """Status (queued, running, succeeded, failed, cancelled), progress 0..1 with stage, epoch, loss and ETA, attempts, error, timestamps and result."""
    # Clients poll this in a loop: read and serialise in one worker-thread hop, and send pydantic's JSON as
    # it is rather than have the framework validate and encode the model a second time.
    return Response(await run_in_threadpool(read_job_json, job_id, tenant), media_type="application/json")


def poll_route() -> BaseRoute:
    """read_job's route, which labels requests the fast path answers for it (api.fastpath)."""
    return route_of(router.routes, read_job)


@router.get(
    "/{job_id}/metrics",
    response_model=JobMetrics,
    response_model_exclude_unset=True,
    summary="A finished job's metrics (404 until there are some)",
)
def read_metrics(job_id: PathRef, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """A finished job's figures: accuracies and wall time for training and unlearning, epsilon-hat and its spread for evaluations. 404 until there are some."""
    job = get_job(session, job_id, tenant)
    if not job.metrics:
        raise NotFound(f"job {job_id} has no metrics yet (status {job.status})")
    return job.metrics


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a job",
    description="A queued job ends cancelled at once; a running one stops within one training step or batch. "
    "Cancelling a fan-out job (reference set, evaluation, study) cancels its runs. 409 once it has finished.",
)
def cancel_job(job_id: PathRef, session: SessionDep, tenant: TenantDep) -> JobPublic:
    job = job_service.cancel(session, job_id, tenant)
    session.commit()
    return JobPublic.model_validate(job, from_attributes=True)
