"""The forget_batch handler: one job forgets every request of a batch from the newest version of the model."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import idsets
from core.batching import BATCH_KIND, settle_failed
from core.db import session_scope
from core.jobs import audit
from core.purge import auto_purge_parent
from core.tables import Dataset, ForgetPolicy, ForgetRequest, Job, Model, RequestStatus
from worker.context import JobContext
from worker.handlers import Outcome, handler, store_child, unlearn_requested, unlearned_metrics


def _on_failure(session: Session, job: Job, reason: str) -> None:
    settle_failed(session, job.id, reason)


def _fulfil(
    session: Session, job_id: str, request_ids: list[str], model_id: str, policy_model_id: str, tenant_id: str
) -> None:
    """Mark the batch's requests fulfilled by `model_id`, make it the lineage's newest version, free the policy."""
    session.execute(
        update(ForgetRequest)
        .where(ForgetRequest.id.in_(request_ids), ForgetRequest.status == RequestStatus.scheduled)
        .values(status=RequestStatus.fulfilled, result_model_id=model_id)
    )
    for request_id in request_ids:
        audit(session, "forget_request", request_id, "fulfilled", tenant_id, model_id=model_id, job_id=job_id)
    session.execute(
        update(ForgetPolicy)
        .where(ForgetPolicy.model_id == policy_model_id, ForgetPolicy.running_job_id == job_id)
        .values(running_job_id=None, head_model_id=model_id)
    )


@handler(BATCH_KIND, on_failure=_on_failure)
def forget_batch(ctx: JobContext) -> Outcome:
    """Union the batch's ids, forget the ones the base version still holds, store the result as its child."""
    with session_scope() as session:
        rows = session.execute(
            select(ForgetRequest.id, ForgetRequest.ids).where(
                ForgetRequest.job_id == ctx.job_id, ForgetRequest.status == RequestStatus.scheduled
            )
        ).all()
        parent = session.get(Model, ctx.params["base_model_id"])
        ds_row = session.get(Dataset, parent.dataset_id)
    request_ids = [r.id for r in rows]
    policy_model_id = ctx.params["policy_model_id"]
    asked = np.unique(np.concatenate([idsets.decode(r.ids) for r in rows])) if rows else np.zeros(0, np.int64)
    already = idsets.decode(parent.forgotten_ids)
    forget = np.setdiff1d(asked, already)
    batch = {"n_requests": len(request_ids), "n_ids": int(asked.size), "n_new_ids": int(forget.size)}
    if forget.size == 0:  # every id was forgotten by an earlier version: that version fulfils the batch

        def already_done(session: Session) -> None:
            _fulfil(session, ctx.job_id, request_ids, parent.id, policy_model_id, parent.tenant_id)

        return Outcome(result={"model_id": parent.id, **batch}, metrics=None, apply=already_done)
    method, params, seed = ctx.params["method"], ctx.params["params"], int(ctx.params.get("seed", 0))
    done, method, auto = unlearn_requested(ctx, parent, ds_row, forget, method, params, seed)
    metrics = {
        **unlearned_metrics(ctx, done, method, forget),
        "n_requests": len(request_ids),
        **({"auto": auto} if auto else {}),
    }
    child_id, add_child = store_child(
        ctx,
        done,
        tenant_id=parent.tenant_id,
        dataset_id=parent.dataset_id,
        parent_id=parent.id,
        arch=parent.arch,
        recipe=parent.recipe,
        already=already,
        forget=forget,
        method=method,
        seed=seed,
        metrics=metrics,
    )

    def apply(session: Session) -> None:
        add_child(session)
        audit(
            session, "model", child_id, "ready", parent.tenant_id, parent_id=parent.id, method=method, **batch
        )
        _fulfil(session, ctx.job_id, request_ids, child_id, policy_model_id, parent.tenant_id)
        auto_purge_parent(session, parent.id, child_id, ctx.job_id)  # as a single request's unlearn does

    result = {"model_id": child_id, **batch, **({"auto": auto} if auto else {})}
    return Outcome(result=result, metrics=metrics, apply=apply)
