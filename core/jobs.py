"""Job lifecycle: every state change is a conditional update plus an audit event."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row
from sqlalchemy import Connection, Select, bindparam, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound
from core.tables import FINISHED, AuditEvent, Job, JobStatus, new_id, utcnow
from core.webhooks import record_job_event

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)


def audit(session: Session, obj_type: str, obj_id: str, event: str, tenant_id: str, **detail: Any) -> None:
    """Record a state change; a job's also queues its webhook deliveries, in the same transaction."""
    session.add(
        AuditEvent(object_type=obj_type, object_id=obj_id, event=event, tenant_id=tenant_id, detail=detail)
    )
    if obj_type == "job":
        record_job_event(session, tenant_id, obj_id, event)


KINDS = "lethe.job_kinds"
"""Key in session.info: the kind of each job the session created, so publishing them needs no read."""


def note_kind(session: Session, job_id: str, kind: str) -> None:
    session.info.setdefault(KINDS, {})[job_id] = kind


def created_kinds(session: Session, job_ids: Iterable[str]) -> dict[str, str]:
    """The kinds of these jobs that the session created (note_kind), by id."""
    noted = session.info.get(KINDS, {})
    return {job_id: noted[job_id] for job_id in job_ids if job_id in noted}


def create_job(session: Session, kind: str, *, tenant_id: str, params: dict[str, Any], **fields: Any) -> Job:
    """Add a queued job and its `queued` event to the session and write both in one flush (the caller
    commits, then publishes)."""
    job_id = fields.pop("id", None) or new_id()
    job = Job(id=job_id, kind=kind, tenant_id=tenant_id, params=params, status=JobStatus.queued, **fields)
    session.add(job)
    note_kind(session, job_id, kind)
    audit(session, "job", job_id, "queued", tenant_id, kind=kind)
    session.flush()
    return job


def get_job(session: Session, job_id: str, tenant_id: str | None = None) -> Job:
    job = session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound(f"job {job_id} not found")
    return job


def jobs_query(
    tenant_id: str,
    *,
    status: str | None = None,
    kind: str | None = None,
    model_id: str | None = None,
    top_level: bool = False,
    id_prefix: str | None = None,
) -> Select[tuple[Job]]:
    """A tenant's jobs matching every filter given: `top_level` leaves out the runs of other jobs (an
    evaluation's seeds, a study's evaluations), `id_prefix` finds a job by the first characters of its id."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if model_id is not None:
        stmt = stmt.where(Job.model_id == model_id)
    if top_level:
        stmt = stmt.where(Job.parent_id.is_(None))
    if id_prefix is not None:
        stmt = stmt.where(Job.id.startswith(id_prefix.lower(), autoescape=True))
    return stmt


@lru_cache(maxsize=8)
def _fields_query(fields: tuple[str, ...]) -> Select[Any]:
    # Built once and reused as the same object: SQLAlchemy then skips matching a new statement's result
    # columns to the cached compiled one's, which costs more than the query itself.
    columns = [getattr(Job, name) for name in fields]
    return select(*columns).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


@lru_cache(maxsize=8)
def _fields_sql(fields: tuple[str, ...]) -> str:
    """_fields_query as Postgres SQL with named parameters, for psycopg without SQLAlchemy."""
    return str(_fields_query(fields).compile(dialect=postgresql.psycopg.dialect()))


async def job_fields_async(
    pool: AsyncConnectionPool, job_id: str, tenant_id: str, fields: Iterable[str]
) -> dict[str, Any]:
    """job_fields on Postgres through an async psycopg pool, on the event loop."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_fields_sql(tuple(fields)), {"job_id": job_id, "tenant_id": tenant_id})
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row


def job_fields(conn: Connection, job_id: str, tenant_id: str, fields: Iterable[str]) -> dict[str, Any]:
    """Chosen columns of one job by a plain Core query on a connection: the cheap read for status polls."""
    query = _fields_query(tuple(fields))
    row = conn.execute(query, {"job_id": job_id, "tenant_id": tenant_id}).mappings().one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return dict(row)


def _transition(session: Session, job_id: str, allowed: tuple[str, ...], **values: Any) -> bool:
    """Move a job only if it is in one of the allowed states; returns whether it moved."""
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(allowed)).values(updated_at=utcnow(), **values)
    return session.execute(stmt).rowcount == 1


def claim(session: Session, job_id: str) -> Job | None:
    """queued -> running for this worker; None when another worker has it or it is finished."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    now = utcnow()
    moved = _transition(
        session,
        job_id,
        (JobStatus.queued,),
        status=JobStatus.running,
        started_at=now,
        heartbeat_at=now,
        worker=worker,
        attempts=Job.attempts + 1,
    )
    if not moved:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    audit(session, "job", job_id, "running", job.tenant_id, worker=worker, attempt=job.attempts)
    return job


def requeue(session: Session, job_id: str, reason: str) -> bool:
    """running -> queued, to run again from the start on any worker; the next claim counts the attempt."""
    moved = _transition(session, job_id, (JobStatus.running,), status=JobStatus.queued, worker=None)
    if moved:
        tenant = session.execute(select(Job.tenant_id).where(Job.id == job_id)).scalar_one()
        audit(session, "job", job_id, "requeued", tenant, reason=reason)
    return moved


def report_progress(session: Session, job_id: str, fraction: float, info: dict[str, Any]) -> bool:
    """Store progress and heartbeat; returns True when a cancel has been requested."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running)
        .values(progress=max(0.0, min(1.0, fraction)), progress_info=info, heartbeat_at=now, updated_at=now)
    )
    return bool(session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar())


def succeed(session: Session, job_id: str, *, result: dict[str, Any], metrics: dict[str, Any] | None) -> bool:
    moved = _transition(
        session,
        job_id,
        (JobStatus.running,),
        status=JobStatus.succeeded,
        progress=1.0,
        result=result,
        metrics=metrics,
        finished_at=utcnow(),
        error=None,
    )
    if moved:
        tenant = session.execute(select(Job.tenant_id).where(Job.id == job_id)).scalar_one()
        audit(session, "job", job_id, "succeeded", tenant, result=result)
    return moved


def finish_unsuccessfully(session: Session, job_id: str, status: JobStatus, error: str) -> bool:
    """running or queued -> failed / cancelled, with the reason."""
    moved = _transition(
        session,
        job_id,
        (JobStatus.queued, JobStatus.running),
        status=status,
        error=error,
        finished_at=utcnow(),
    )
    if moved:
        tenant = session.execute(select(Job.tenant_id).where(Job.id == job_id)).scalar_one()
        audit(session, "job", job_id, str(status), tenant, error=error)
    return moved


def is_finished(job: Job) -> bool:
    return job.status in FINISHED


def cancel(session: Session, job_id: str, tenant_id: str) -> Job:
    """Cancel a job: queued and fan-out jobs end now (with their children); running ones stop at their next step."""
    from core.fanout import FANOUT_KINDS, cancel_tree, end_parents_of

    job = get_job(session, job_id, tenant_id)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is already {job.status}")
    if job.status == JobStatus.queued or job.kind in FANOUT_KINDS:
        finish_unsuccessfully(session, job_id, JobStatus.cancelled, "cancelled on request")
        cancel_tree(session, job_id, f"parent job {job_id} was cancelled")
        end_training_model(session, job, "its training job was cancelled")
        end_parents_of(session, job_id)
    else:
        session.execute(
            update(Job).where(Job.id == job_id).values(cancel_requested=True, updated_at=utcnow())
        )
        audit(session, "job", job_id, "cancel_requested", tenant_id)
    session.flush()
    return get_job(session, job_id, tenant_id)


def end_training_model(session: Session, job: Job, reason: str = "its training job did not succeed") -> None:
    """A model whose training ended without success never stays 'training': cancelled with its job, else failed."""
    from core.tables import Model, ModelStatus

    model = session.get(Model, job.model_id) if job.kind == "train" and job.model_id else None
    if model is None or model.status != ModelStatus.training:
        return
    job_status = session.execute(select(Job.status).where(Job.id == job.id)).scalar_one()
    status = ModelStatus.cancelled if job_status == JobStatus.cancelled else ModelStatus.failed
    model.status = status
    audit(session, "model", model.id, str(status), model.tenant_id, reason=reason)


def heartbeat(session: Session, job_id: str) -> bool:
    """Mark a running job alive; returns True when a cancel has been requested."""
    now = utcnow()
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(heartbeat_at=now)
    )
    return bool(session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar())
