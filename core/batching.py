"""The batch scheduler: forget a model's pending requests together, in one job, when its policy says so.

Its state is the database only: pending requests, and each policy's `running_job_id`. A batch is claimed
by a conditional update (`running_job_id` from null to the new job's id), so any number of API processes
and `lethe maintain` can sweep at once and one model never has two batches; a restart loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core import idsets
from core.db import session_scope
from core.evaluations import create_evaluation, queued_children
from core.group_size import plan_n_models
from core.jobs import audit, create_job
from core.settings import get_settings
from core.tables import (
    FINISHED,
    ForgetPolicy,
    ForgetRequest,
    Job,
    JobStatus,
    Model,
    ModelStatus,
    RequestStatus,
    new_id,
    utcnow,
)

log = logging.getLogger(__name__)

BATCH_KIND = "forget_batch"
EVALUATION_DELTA = 0.05
"""The study's delta, for the evaluation a policy with `evaluate` queues beside each batch."""


@dataclass
class BatchReport:
    started: list[str] = field(default_factory=list)
    """Batch jobs created by this pass."""
    publish: list[str] = field(default_factory=list)
    """Every job this pass created, committed: the batches and their evaluations' runs, for the caller to publish."""
    settled: list[str] = field(default_factory=list)
    """Batch jobs that ended without success and whose requests this pass marked failed."""
    rejected: list[str] = field(default_factory=list)


def settle_failed(session: Session, job_id: str, reason: str) -> int:
    """A batch that did not succeed: its scheduled requests fail with the reason, and its model is free again."""
    requests = list(
        session.execute(
            select(ForgetRequest.id, ForgetRequest.tenant_id).where(
                ForgetRequest.job_id == job_id, ForgetRequest.status == RequestStatus.scheduled
            )
        ).all()
    )
    if requests:
        session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.job_id == job_id, ForgetRequest.status == RequestStatus.scheduled)
            .values(status=RequestStatus.failed, reason=reason)
        )
    for request_id, tenant_id in requests:
        audit(session, "forget_request", request_id, "failed", tenant_id, job_id=job_id, reason=reason)
    session.execute(
        update(ForgetPolicy)
        .where(ForgetPolicy.running_job_id == job_id)
        .values(running_job_id=None, updated_at=utcnow())
    )
    return len(requests)


def _settle_finished(report: BatchReport) -> None:
    """Batches that ended unsuccessfully without their handler's clean-up (worker lost, cancelled while queued)."""
    with session_scope() as session:
        ended = session.execute(
            select(Job.id, Job.status, Job.error)
            .join(ForgetPolicy, ForgetPolicy.running_job_id == Job.id)
            .where(Job.status.in_(FINISHED))
        ).all()
        for job_id, status, error in ended:
            if status == JobStatus.succeeded:  # its handler settled it in the same transaction
                continue
            settle_failed(session, job_id, error or f"batch job {job_id} {status}")
            report.settled.append(job_id)


def _reject_for_failed_models(report: BatchReport) -> None:
    """Pending requests for a model whose training failed or was cancelled can never be met: rejected, with why."""
    with session_scope() as session:
        rows = session.execute(
            select(ForgetRequest.id, ForgetRequest.tenant_id, ForgetRequest.model_id, Model.status)
            .join(Model, Model.id == ForgetRequest.model_id)
            .where(
                ForgetRequest.status == RequestStatus.pending,
                Model.status.in_((ModelStatus.failed, ModelStatus.cancelled)),
            )
        ).all()
        for request_id, tenant_id, model_id, model_status in rows:
            never = "failed to train" if model_status == ModelStatus.failed else "had its training cancelled"
            reason = f"model {model_id} {never}: there is nothing to forget from"
            moved = session.execute(
                update(ForgetRequest)
                .where(ForgetRequest.id == request_id, ForgetRequest.status == RequestStatus.pending)
                .values(status=RequestStatus.rejected, reason=reason)
            ).rowcount
            if moved:
                audit(session, "forget_request", request_id, "rejected", tenant_id, reason=reason)
                report.rejected.append(request_id)


def _due_models(session: Session) -> list[str]:
    """Models with a free policy, a ready newest version (where the batch starts; the model itself may since
    have been retired) and pending requests past the window or a limit."""
    now = utcnow()
    pending = (
        select(
            ForgetRequest.model_id,
            func.count().label("n"),
            func.sum(ForgetRequest.n_ids).label("samples"),
            func.min(ForgetRequest.created_at).label("oldest"),
        )
        .where(ForgetRequest.status == RequestStatus.pending)
        .group_by(ForgetRequest.model_id)
        .subquery()
    )
    rows = session.execute(
        select(ForgetPolicy, pending.c.n, pending.c.samples, pending.c.oldest)
        .join(pending, pending.c.model_id == ForgetPolicy.model_id)
        .join(Model, Model.id == func.coalesce(ForgetPolicy.head_model_id, ForgetPolicy.model_id))
        .where(ForgetPolicy.running_job_id.is_(None), Model.status == ModelStatus.ready)
    ).all()
    due = []
    for policy, n, samples, oldest in rows:
        if oldest.tzinfo is None:  # SQLite gives back naive UTC
            oldest = oldest.replace(tzinfo=now.tzinfo)
        if (
            oldest <= now - timedelta(seconds=policy.window_seconds)
            or (policy.max_requests is not None and n >= policy.max_requests)
            or (policy.max_samples is not None and samples >= policy.max_samples)
        ):
            due.append(policy.model_id)
    return due


def _take(policy: ForgetPolicy, pending: list[tuple[str, int]]) -> list[str]:
    """The oldest pending requests that fit the policy's limits (always at least one)."""
    taken, samples = [], 0
    for request_id, n_ids in pending:
        if taken and policy.max_requests is not None and len(taken) >= policy.max_requests:
            break
        if taken and policy.max_samples is not None and samples + n_ids > policy.max_samples:
            break
        taken.append(request_id)
        samples += n_ids
    return taken


def _evaluation(session: Session, policy: ForgetPolicy, base: str, taken: list[str]) -> tuple[str, list[str]]:
    """An evaluation of the policy's method on the batch's new ids from its base version: its id and jobs."""
    blobs = session.execute(select(ForgetRequest.ids).where(ForgetRequest.id.in_(taken))).scalars()
    asked = np.unique(np.concatenate([idsets.decode(b) for b in blobs]))
    base_row = session.get(Model, base)
    new = np.setdiff1d(asked, idsets.decode(base_row.forgotten_ids))
    n_models, _ = plan_n_models(None, EVALUATION_DELTA, get_settings().target_epsilon_ceiling)
    evaluation, job = create_evaluation(
        session,
        tenant_id=policy.tenant_id,
        model_ref=base,
        forget_ids=(new if new.size else asked).tolist(),
        method=policy.method,
        params=policy.params,
        n_models=n_models,
        delta=EVALUATION_DELTA,
    )
    return evaluation.id, queued_children(session, job.id)


def start_batch(session: Session, model_id: str) -> list[str]:
    """Claim the model's policy for a new batch and schedule its requests; the jobs to publish (the batch
    first, then an evaluation's), none when another sweep has the model."""
    job_id = new_id()
    claimed = session.execute(
        update(ForgetPolicy)
        .where(ForgetPolicy.model_id == model_id, ForgetPolicy.running_job_id.is_(None))
        .values(running_job_id=job_id, updated_at=utcnow())
    ).rowcount
    if not claimed:
        return []
    policy = session.get(ForgetPolicy, model_id, populate_existing=True)
    assert policy is not None
    pending = session.execute(
        select(ForgetRequest.id, ForgetRequest.n_ids)
        .where(ForgetRequest.model_id == model_id, ForgetRequest.status == RequestStatus.pending)
        .order_by(ForgetRequest.created_at, ForgetRequest.id)
    ).all()
    taken = _take(policy, [(r, n) for r, n in pending])
    if not taken:  # another sweep scheduled them between our look and our claim
        policy.running_job_id = None
        return []
    base = policy.head_model_id or model_id
    params = {
        "method": policy.method,
        "params": policy.params,
        "seed": 0,
        "policy_model_id": model_id,
        "base_model_id": base,
    }
    evaluation_jobs: list[str] = []
    if policy.evaluate:
        params["evaluation_id"], evaluation_jobs = _evaluation(session, policy, base, taken)
    create_job(session, BATCH_KIND, tenant_id=policy.tenant_id, params=params, model_id=base, id=job_id)
    session.execute(
        update(ForgetRequest)
        .where(ForgetRequest.id.in_(taken), ForgetRequest.status == RequestStatus.pending)
        .values(status=RequestStatus.scheduled, job_id=job_id, method=policy.method, params=policy.params)
    )
    for request_id in taken:
        audit(
            session,
            "forget_request",
            request_id,
            "scheduled",
            policy.tenant_id,
            job_id=job_id,
            base_model_id=base,
            batch_size=len(taken),
        )
    return [job_id, *evaluation_jobs]


def sweep_batches() -> BatchReport:
    """One pass: settle batches that ended badly, reject what cannot be done, start every due batch."""
    report = BatchReport()
    _settle_finished(report)
    _reject_for_failed_models(report)
    with session_scope() as session:
        due = _due_models(session)
    for model_id in due:
        with session_scope() as session:  # one transaction per model: one model's trouble stops no other
            if jobs := start_batch(session, model_id):
                report.started.append(jobs[0])
                report.publish.extend(jobs)
    if report.started or report.settled or report.rejected:
        log.info(
            "batches: started %d, settled %d failed, rejected %d requests",
            len(report.started),
            len(report.settled),
            len(report.rejected),
        )
    return report


def batch_info(session: Session, job: Job) -> dict[str, object]:
    """What a request's batch was: its job and state, the version it started from, its size."""
    n_requests = session.execute(select(func.count()).where(ForgetRequest.job_id == job.id)).scalar_one()
    return {
        "job_id": job.id,
        "status": job.status,
        "base_model_id": job.params.get("base_model_id"),
        "n_requests": n_requests,
        "n_ids": (job.result or {}).get("n_ids"),
        "evaluation_id": job.params.get("evaluation_id"),
    }
