"""Keep every job moving: requeue jobs whose worker died, republish jobs whose message was lost, end or score
fan-out parents whose children ended unnoticed, and start due batches.

Runs in every API process (a background thread) and from `lethe maintain`; every change is a
conditional update, so any number of them can run at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update

from core import fanout, jobs
from core.batching import sweep_batches
from core.db import session_scope
from core.fanout import FANOUT_KINDS
from core.queue import queue_length
from core.services import publish_jobs
from core.settings import get_settings
from core.tables import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)
    ended_parents: list[str] = field(default_factory=list)
    """Fan-out parents ended because a child had failed or was cancelled unnoticed."""
    parents_to_score: list[str] = field(default_factory=list)
    """Fan-out parents whose children all succeeded unnoticed: sent to a worker, which scores them."""


def reap_stale(report: SweepReport) -> None:
    """Running jobs without a heartbeat for stale_after: back to queued, or failed after max_attempts."""
    settings = get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_seconds)
    with session_scope() as session:
        stale = session.execute(
            select(Job.id, Job.attempts, Job.tenant_id).where(
                Job.status == JobStatus.running, Job.kind.not_in(FANOUT_KINDS), Job.heartbeat_at < cutoff
            )
        ).all()
        for job_id, attempts, tenant in stale:
            if attempts >= settings.max_attempts:
                reason = f"worker lost: no heartbeat for {settings.stale_after_seconds:g}s, after {attempts} attempts"
                if jobs.finish_unsuccessfully(session, job_id, JobStatus.failed, reason):
                    jobs.end_training_model(session, session.get(Job, job_id), reason)
                    report.failed.append(job_id)
                continue
            moved = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.running, Job.heartbeat_at < cutoff)
                .values(status=JobStatus.queued, worker=None, updated_at=utcnow())
            ).rowcount
            if moved:
                jobs.audit(
                    session, "job", job_id, "requeued", tenant, reason="no heartbeat", attempts=attempts
                )
                report.requeued.append(job_id)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue_orphans() -> list[str]:
    """Running jobs whose worker process on this machine is gone: requeued and published now.

    `lethe up` calls it as it starts and after it stopped its worker, so a job left behind by a killed
    worker runs again at once instead of after LETHE_STALE_AFTER_SECONDS. Only this host's jobs are
    looked at (the worker column is "host:pid"); a job past LETHE_MAX_ATTEMPTS fails with the reason.
    """
    settings = get_settings()
    host = socket.gethostname()
    requeued: list[str] = []
    with session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.worker, Job.attempts).where(
                Job.status == JobStatus.running, Job.worker.like(f"{host}:%")
            )
        ).all()
        for job_id, worker, attempts in rows:
            pid = worker.rsplit(":", 1)[1]
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            if attempts >= settings.max_attempts:
                reason = f"worker lost: its process ended, after {attempts} attempts"
                if jobs.finish_unsuccessfully(session, job_id, JobStatus.failed, reason):
                    jobs.end_training_model(session, session.get(Job, job_id), reason)
            elif jobs.requeue(session, job_id, "its worker process is gone"):
                requeued.append(job_id)
    publish_jobs(requeued)
    return requeued


def reap_parents(report: SweepReport) -> None:
    """Fan-out parents not settled for stale_after: a worker that died after a child ended never told them.

    A parent with a failed or cancelled child ends here; one whose children all succeeded is published, and
    the worker that takes it runs its final scoring. Either way it is looked at once per stale_after.
    """
    settings = get_settings()
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.stale_after_seconds)
    with session_scope() as session:
        parents = session.execute(
            select(Job).where(
                Job.status == JobStatus.running, Job.kind.in_(FANOUT_KINDS), Job.heartbeat_at < cutoff
            )
        ).scalars()
        for parent in list(parents):
            if fanout.end_if_unsuccessful(session, parent):
                report.ended_parents.append(parent.id)
                continue
            if fanout.wait_state(session, parent).complete:
                report.parents_to_score.append(parent.id)
            parent.heartbeat_at = now


def lost_messages(report: SweepReport) -> None:
    """Queued jobs older than requeue_after while the broker's queue is empty: their messages were lost."""
    settings = get_settings()
    if queue_length() > 0:
        return
    cutoff = utcnow() - timedelta(seconds=settings.requeue_after_seconds)
    with session_scope() as session:
        ids = list(
            session.execute(
                select(Job.id).where(
                    Job.status == JobStatus.queued, Job.kind.not_in(FANOUT_KINDS), Job.updated_at < cutoff
                )
            ).scalars()
        )
        if ids:
            session.execute(update(Job).where(Job.id.in_(ids)).values(updated_at=utcnow()))
    report.republished.extend(ids)


def sweep() -> SweepReport:
    """One pass: reap, then republish what is queued but not in the broker."""
    report = SweepReport()
    reap_stale(report)
    reap_parents(report)
    lost_messages(report)
    publish_jobs(report.requeued + report.republished + report.parents_to_score)
    publish_jobs(
        sweep_batches().publish
    )  # after the jobs above: a failing batch pass must not hold them back
    if (
        report.requeued
        or report.failed
        or report.republished
        or report.ended_parents
        or report.parents_to_score
    ):
        log.warning(
            "maintenance: requeued %d, failed %d, republished %d, parents ended %d, parents sent to be scored %d",
            len(report.requeued),
            len(report.failed),
            len(report.republished),
            len(report.ended_parents),
            len(report.parents_to_score),
        )
    return report


class Maintainer:
    """A daemon thread that sweeps every interval until stopped; errors are logged and retried."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="lethe-maintenance")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sweep()
            except Exception as exc:  # database or broker down: try again next round
                log.warning("maintenance pass failed: %s", exc)
