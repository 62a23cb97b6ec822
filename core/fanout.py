"""Jobs that fan out: a parent job waits for child jobs (the runs), and settles when the last one ends.

The parent is `running` from the moment it is created and is never sent to the broker; whichever
worker finishes the last child settles it. No scheduler: the database says who waits for what.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.jobs import audit, finish_unsuccessfully
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
    runs_total: int
    """Models trained by the runs below the parent, through any fan-out jobs between (a study's evaluations)."""
    runs_finished: int

    @property
    def complete(self) -> bool:
        return self.finished == self.total


def wait_state(session: Session, parent: Job) -> WaitState:
    waits = parent.params.get("waits", [])
    rows = session.execute(select(Job.id, Job.status, Job.error).where(Job.id.in_(waits))).all()
    finished = sum(1 for r in rows if r.status in FINISHED)
    failed = [(r.id, r.status, r.error) for r in rows if r.status in (JobStatus.failed, JobStatus.cancelled)]
    runs = runs_below(session, waits)
    return WaitState(
        total=len(waits),
        finished=finished,
        failed=failed,
        runs_total=sum(n for _status, n in runs.values()),
        runs_finished=sum(n for status, n in runs.values() if status in FINISHED),
    )


def runs_below(session: Session, waits: list[str]) -> dict[str, tuple[str, int]]:
    """Run job id -> (status, models it trains) for every run these jobs are or wait for, each counted once.

    A study waits for evaluations, which wait for runs; evaluations of one study share reference runs. A
    reference pack trains several models in one job, and counts as that many runs.
    """
    runs: dict[str, tuple[str, int]] = {}
    seen: set[str] = set()
    frontier = list(dict.fromkeys(waits))
    while frontier:
        seen.update(frontier)
        rows = session.execute(
            select(Job.id, Job.kind, Job.status, Job.params).where(Job.id.in_(frontier))
        ).all()
        frontier = []
        for r in rows:
            params = r.params or {}
            if r.kind in FANOUT_KINDS:
                frontier.extend(w for w in dict.fromkeys(params.get("waits", [])) if w not in seen)
            else:
                runs[r.id] = (r.status, len(params.get("seeds", ())) or 1)
    return runs


def cancel_jobs(session: Session, job_ids: list[str], reason: str) -> None:
    """Queued jobs and fan-out parents end cancelled at once; running runs are asked to stop at their next step."""
    now = utcnow()
    ended = session.execute(
        update(Job)
        .where(
            Job.id.in_(job_ids),
            or_(
                Job.status == JobStatus.queued,
                and_(Job.status == JobStatus.running, Job.kind.in_(FANOUT_KINDS)),
            ),
        )
        .values(status=JobStatus.cancelled, error=reason, finished_at=now, updated_at=now)
        .returning(Job.id, Job.tenant_id)
    ).all()
    for job_id, tenant in ended:
        audit(session, "job", job_id, "cancelled", tenant, error=reason)
    session.execute(
        update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.running).values(cancel_requested=True)
    )


def descendants(session: Session, job_id: str) -> list[str]:
    """Every job created below this one (by parent_id), children first."""
    out: list[str] = []
    frontier = [job_id]
    while frontier:
        frontier = list(session.execute(select(Job.id).where(Job.parent_id.in_(frontier))).scalars())
        out.extend(frontier)
    return out


def cancel_tree(session: Session, root_id: str, reason: str) -> None:
    """Cancel every job below a parent that no other live parent waits for.

    Reference runs are shared: an evaluation waits for the runs of its reference set that another
    evaluation queued, and those go on when only the other one is cancelled.
    """
    below = descendants(session, root_id)
    closing = {root_id, *below}
    rows = session.execute(
        select(Job.id, Job.params).where(Job.kind.in_(FANOUT_KINDS), Job.status == JobStatus.running)
    ).all()
    shared = {j for r in rows if r.id not in closing for j in (r.params or {}).get("waits", [])}
    cancel_jobs(session, [j for j in below if j not in shared], reason)


def end_if_unsuccessful(session: Session, parent: Job) -> bool:
    """A running parent with a child that failed or was cancelled ends now, and so does everything below it.

    It ends cancelled when every such child was cancelled, failed otherwise; the parents waiting for it
    are told in turn, so a study never outlives its evaluations. Returns whether it ended.
    """
    if parent.status != JobStatus.running:
        return False
    state = wait_state(session, parent)
    if not state.failed:
        return False
    failed = [f for f in state.failed if f[1] == JobStatus.failed]
    status = JobStatus.failed if failed else JobStatus.cancelled
    child, child_status, error = (failed or state.failed)[0]
    reason = f"{len(state.failed)} of {state.total} runs did not succeed; first: job {child} {child_status}: {error}"
    if not finish_unsuccessfully(session, parent.id, status, reason):
        return False
    cancel_tree(session, parent.id, f"parent job {parent.id} {status}")
    end_parents_of(session, parent.id)
    return True


def end_parents_of(session: Session, job_id: str) -> None:
    """After a job ended without success: the parents waiting for it end too."""
    for parent_id in parents_of(session, job_id):
        parent = session.get(Job, parent_id, populate_existing=True)
        if parent is not None:
            end_if_unsuccessful(session, parent)
