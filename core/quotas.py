"""Per-tenant limits on queued work: one tenant cannot fill the queue that every tenant shares."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.settings import get_settings
from core.tables import Job, JobStatus, Run

ACTIVE = (JobStatus.queued, JobStatus.running)


class QuotaExceeded(Exception):
    """The tenant is at a limit now; the same request may succeed once its queued work drains (429)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def _count(session: Session, tenant_id: str, *conditions: object) -> int:
    stmt = select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, *conditions)
    return session.execute(stmt).scalar_one()


def check_tenant_queue(session: Session, tenant_id: str, *, new_jobs: int, run_jobs: list[str]) -> None:
    """Called after a request's jobs were added (not committed): refuse it if the tenant is now over a limit.

    Runs are counted as models, not tasks: a reference pack trains several in one job. A request that alone
    needs more runs than the limit can never succeed (422); one that meets a full queue may later (429 with
    Retry-After)."""
    settings = get_settings()
    session.flush()
    new_runs = _runs(session, Run.job_id.in_(run_jobs)) if run_jobs else 0
    if new_runs > settings.tenant_max_queued_runs:
        raise InvalidInput(
            "n_models",
            f"this request needs {new_runs} training runs; a tenant may have at most "
            f"{settings.tenant_max_queued_runs} queued (LETHE_TENANT_MAX_QUEUED_RUNS): ask for fewer models",
        )
    retry = settings.tenant_retry_after_seconds
    if new_jobs:
        active = _count(session, tenant_id, Job.parent_id.is_(None), Job.status.in_(ACTIVE))
        if active > settings.tenant_max_active_jobs:
            raise QuotaExceeded(
                f"tenant {tenant_id!r} has {active - new_jobs} queued or running jobs, the most it may have is "
                f"{settings.tenant_max_active_jobs}; retry once some have finished",
                retry,
            )
    if new_runs:
        queued = _runs(session, Run.tenant_id == tenant_id, Job.status == JobStatus.queued)
        if queued > settings.tenant_max_queued_runs:
            raise QuotaExceeded(
                f"tenant {tenant_id!r} would have {queued} queued training runs, the most it may have is "
                f"{settings.tenant_max_queued_runs}; retry once some have run",
                retry,
            )


def _runs(session: Session, *conditions: object) -> int:
    """Runs (models to train) whose jobs match: a pack's one job holds several."""
    stmt = select(func.count()).select_from(Run).join(Job, Job.id == Run.job_id).where(*conditions)
    return session.execute(stmt).scalar_one()
