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
    """Record a fan-out parent's progress, and its parents'; end it when a child failed; score it when all did."""
    with session_scope() as session:
        parent = session.get(Job, parent_id)
        if parent is None or parent.status != JobStatus.running or parent.kind not in fanout.FANOUT_KINDS:
            return
        state = fanout.wait_state(session, parent)
        if state.failed:
            fanout.end_if_unsuccessful(session, parent)  # and its own parents
            return
        progress = state.runs_finished / state.runs_total if state.runs_total else 1.0
        if progress >= (parent.progress or 0.0):  # settled by two workers at once: never move back
            parent.progress = progress
            parent.progress_info = {
                "stage": "runs",
                "finished": state.runs_finished,
                "total": state.runs_total,
            }
        parent.heartbeat_at = utcnow()
        kind = parent.kind
        grandparents = fanout.parents_of(session, parent_id) if not state.complete else []
    if not state.complete:
        for grandparent_id in grandparents:
            settle(grandparent_id)  # a study counts its evaluations' runs as they finish
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
