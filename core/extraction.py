"""Logits as a job: which samples a request names, checked before anything is queued."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from core import idsets
from core.errors import Conflict, InvalidInput
from core.jobs import create_job
from core.purge import require_weights
from core.services import get_owned, resolve_model, validate_forget_ids
from core.tables import Dataset, ForgetRequest, Job, Model, ModelStatus

ARTIFACT = "logits.npz"
"""The one artifact a logits job writes: `logits` [n, outputs] float32, `ids` [n] and `labels` [n]."""


def artifact_key(job_id: str) -> str:
    return f"jobs/{job_id}/{ARTIFACT}"


def create_logits_job(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str,
    ids: list[int] | None,
    split: str | None,
    forget_request_id: str | None,
) -> Job:
    """Queue a job that writes the model's outputs on the named samples (the caller commits, then publishes)."""
    if forget_request_id is not None and (ids is not None or split is not None):
        raise InvalidInput(
            "forget_request_id", "give forget_request_id alone: its ids index the training split"
        )
    if forget_request_id is None and ids is None and split is None:
        raise InvalidInput("ids", "name the samples: ids, a split (train or test), or a forget_request_id")
    model = resolve_model(session, model_ref, tenant_id)
    ds = session.get(Dataset, model.dataset_id)
    assert ds is not None
    if forget_request_id is not None:
        request = get_owned(session, ForgetRequest, forget_request_id, tenant_id, "forget request")
        asked_of = session.get(Model, request.model_id)
        if asked_of is None or asked_of.dataset_id != model.dataset_id:
            raise InvalidInput(
                "forget_request_id", "forget_request_id: that request is for a model of another data set"
            )
        chosen, split = idsets.decode(request.ids), "train"
    elif ids is not None:
        split = split or "train"
        chosen = validate_forget_ids(ids, ds.n_train if split == "train" else ds.n_test, "ids")
    else:
        chosen = None
    require_weights(model, "run")
    if model.status != ModelStatus.ready:
        raise Conflict(f"model {model_ref!r} is {model.status}, not ready: it has no weights to run yet")
    params: dict[str, object] = {"split": split}
    if chosen is not None:
        params["ids"] = np.asarray(chosen, dtype=np.int64).tolist()
    n = len(chosen) if chosen is not None else (ds.n_train if split == "train" else ds.n_test)
    params["n_samples"] = int(n)
    return create_job(session, "logits", tenant_id=tenant_id, params=params, model_id=model.id)
