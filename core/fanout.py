"""Jobs that fan out: a parent job waits for child jobs (the runs), and settles when the last one ends.

The parent is `running` from the moment it is created and is never sent to the broker; whichever
worker finishes the last child settles it. No scheduler: the database says who waits for what.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.jobs import audit
from core.tables import FINISHED, Job, JobStatus, utcnow

FANOUT_KINDS = ("reference", "evaluate", "study")


def start_waiting(parent: Job, waits: list[str]) -> None:
    """Make a freshly created parent job wait for these jobs."""
    if not waits:
        raise ValueError("a fan-out job needs at least one job to wait for")
    now = utcnow()
    parent.status = JobStatus.running
    parent.started_at = now
    parent.heartbeat_at = now
    parent.worker = "fan-out"
    parent.params = {**parent.params, "waits": list(waits)}


def parents_of(session: Session, job_id: str) -> list[str]:
    """Running fan-out jobs that wait for this job."""
    rows = session.execute(
        select(Job.id, Job.params).where(Job.kind.in_(FANOUT_KINDS), Job.status == JobStatus.running)
    ).all()
    return [r.id for r in rows if job_id in (r.params or {}).get("waits", [])]


@dataclass(frozen=True)
class WaitState:
    total: int
    finished: int
    failed: list[tuple[str, str, str | None]]

    @property
    def complete(self) -> bool:
        return self.finished == self.total


def wait_state(session: Session, parent: Job) -> WaitState:
    waits = parent.params.get("waits", [])
    rows = session.execute(select(Job.id, Job.status, Job.error).where(Job.id.in_(waits))).all()
    finished = sum(1 for r in rows if r.status in FINISHED)
    failed = [(r.id, r.status, r.error) for r in rows if r.status in (JobStatus.failed, JobStatus.cancelled)]
    return WaitState(total=len(waits), finished=finished, failed=failed)


def cancel_jobs(session: Session, job_ids: list[str], reason: str) -> None:
    """Queued jobs end cancelled at once; running ones are asked to stop at their next step."""
    now = utcnow()
    queued = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, error=reason, finished_at=now, updated_at=now)
        .returning(Job.id, Job.tenant_id)
    ).all()
    for job_id, tenant in queued:
        audit(session, "job", job_id, "cancelled", tenant, error=reason)
    session.execute(
        update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.running).values(cancel_requested=True)
    )
