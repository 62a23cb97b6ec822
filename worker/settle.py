"""Settle fan-out parents when their children end: progress, failure, or the final scoring step."""

from __future__ import annotations

import logging

from core import fanout, jobs
from core.db import session_scope
from core.tables import Job, JobStatus, utcnow
from worker.evaluation import FINALIZERS

log = logging.getLogger(__name__)


def notify(job_id: str) -> None:
    """Called after a job ended: settle every parent waiting for it (and, recursively, theirs)."""
    with session_scope() as session:
        parents = fanout.parents_of(session, job_id)
    for parent_id in parents:
        settle(parent_id)


def settle(parent_id: str) -> None:
    """Record a fan-out parent's progress; end it when a child did not succeed; score it when all did."""
    with session_scope() as session:
        parent = session.get(Job, parent_id)
        if parent is None or parent.status != JobStatus.running or parent.kind not in fanout.FANOUT_KINDS:
            return
        state = fanout.wait_state(session, parent)
        if state.failed:
            fanout.end_if_unsuccessful(session, parent)  # and its own parents
            return
        parent.progress = state.finished / state.total if state.total else 1.0
        parent.heartbeat_at = utcnow()
        parent.progress_info = {"stage": "runs", "finished": state.finished, "total": state.total}
        kind = parent.kind
    if not state.complete:
        return
    try:
        outcome = FINALIZERS[kind](parent_id)
    except Exception as exc:
        log.exception("finalizing job %s failed", parent_id)
        with session_scope() as session:
            jobs.finish_unsuccessfully(session, parent_id, JobStatus.failed, f"{type(exc).__name__}: {exc}")
        notify(parent_id)
        return
    with session_scope() as session:
        if jobs.succeed(session, parent_id, result=outcome.result, metrics=outcome.metrics) and outcome.apply:
            outcome.apply(session)
    notify(parent_id)
