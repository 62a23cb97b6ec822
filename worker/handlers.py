"""Job handlers, one per job kind: load rows, call ml/, return what to store. No HTTP, no Celery here."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from core import idsets
from core.artifacts import get_store
from core.db import session_scope
from core.jobs import audit, end_training_model
from core.purge import auto_purge_parent, require_weights
from core.settings import get_settings
from core.tables import Dataset, ForgetRequest, Job, Model, ModelStatus, new_id, utcnow
from ml import checkpoint
from ml.data import ArrayDataset
from ml.ensemble import device_pack_size, train_packed
from ml.logits import evaluate
from ml.methods import UnlearnData, run_method
from ml.methods.params import AUTO
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import train
from worker.context import JobContext
from worker.data import load_for


@dataclass
class Outcome:
    """What a successful job stores; `apply` runs in the same transaction that marks it succeeded."""

    result: dict[str, Any]
    metrics: dict[str, Any] | None
    apply: Callable[[Session], None] | None = None


@dataclass(frozen=True)
class Handler:
    run: Callable[[JobContext], Outcome]
    on_failure: Callable[[Session, Job, str], None] | None = None


HANDLERS: dict[str, Handler] = {}


def handler(kind: str, on_failure: Callable[[Session, Job, str], None] | None = None) -> Callable:
    def wrap(fn: Callable[[JobContext], Outcome]) -> Callable[[JobContext], Outcome]:
        HANDLERS[kind] = Handler(fn, on_failure)
        return fn

    return wrap


def _checkpoint_key(model_id: str) -> str:
    return f"models/{model_id}/model.safetensors"


@dataclass
class Trained:
    net: torch.nn.Module
    data: ArrayDataset
    udata: UnlearnData
    wall_seconds: float
    finished_at: datetime
    """When training or the method ended (UTC), to tell its time from the job's bookkeeping after it."""
    details: dict[str, Any] = field(default_factory=dict)
    """What the method recorded about its run (ml.methods.base.Run.details): the metrics' method_details."""


def train_from_scratch(
    ctx: JobContext,
    ds_row: Dataset,
    arch: ArchSpec,
    recipe: Recipe,
    seed: int,
    forget: np.ndarray,
    excluded: np.ndarray,
) -> Trained:
    """Train a fresh network on the training split minus the forget and excluded ids."""
    data = load_for(ds_row)
    udata = UnlearnData(data, forget, excluded, recipe, arch)
    torch.manual_seed(seed)
    net = build_model(arch, ds_row.num_classes, ds_row.in_channels)
    start = time.perf_counter()
    train(
        net,
        data,
        udata.retain_ids,
        recipe,
        seed=seed,
        device=ctx.device,
        progress=ctx.progress,
        should_stop=ctx.should_stop,
    )
    return Trained(net, data, udata, time.perf_counter() - start, utcnow())


def train_pack_from_scratch(
    ctx: JobContext,
    ds_row: Dataset,
    arch: ArchSpec,
    recipe: Recipe,
    seeds: list[int],
    forget: np.ndarray,
    excluded: np.ndarray,
) -> list[Trained]:
    """train_from_scratch for several seeds at once (ml/ensemble.py), each model as its own result.

    Seeds beyond what the device holds train in several packs; a pack still too large for the device's memory
    trains in halves, one after the other.
    """
    data = load_for(ds_row)
    udata = UnlearnData(data, forget, excluded, recipe, arch)
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(build_model(arch, ds_row.num_classes, ds_row.in_channels))
    start = time.perf_counter()

    def run(part: slice) -> None:
        try:
            train_packed(
                nets[part],
                data,
                [udata.retain_ids] * len(nets[part]),
                recipe,
                seeds=seeds[part],
                device=ctx.device,
                progress=ctx.progress,
                should_stop=ctx.should_stop,
            )
        except torch.cuda.OutOfMemoryError:
            if part.stop - part.start < 2:
                raise
            torch.cuda.empty_cache()
            middle = (part.start + part.stop) // 2
            run(slice(part.start, middle))
            run(slice(middle, part.stop))

    # LETHE_PACK_SIZE, else as many as the device holds (ml.ensemble.device_pack_size), per pack.
    size = get_settings().pack_size or device_pack_size(
        nets[0], data.train_x.shape[1:], recipe.batch_size, ctx.device
    )
    for first in range(0, len(nets), size):
        run(slice(first, min(first + size, len(nets))))
    # Each model's wall time is its share of the pack's: what that model cost the worker.
    share, finished = (time.perf_counter() - start) / len(nets), utcnow()
    return [Trained(net, data, udata, share, finished) for net in nets]


def read_network(parent: Model, ds_row: Dataset) -> torch.nn.Module:
    """A stored model's network, read from its checkpoint (a purged one fails saying so)."""
    require_weights(parent, "unlearned")
    arch = ArchSpec.model_validate(parent.arch)
    return checkpoint.from_bytes(
        get_store().read_bytes(parent.checkpoint), arch, ds_row.num_classes, ds_row.in_channels
    )


def unlearn_requested(
    ctx: JobContext, parent: Model, ds_row: Dataset, forget: np.ndarray, method: str, params: dict, seed: int
) -> tuple[Trained, str, dict[str, Any] | None]:
    """unlearn_from with the method asked for; "auto" first chooses one (worker/auto.py). Returns the result,
    the method that ran and, for auto, the search's block."""
    if method == AUTO:
        from worker.auto import unlearn_auto  # worker.auto builds on this module

        return unlearn_auto(ctx, parent, ds_row, forget, params, seed)
    return unlearn_from(ctx, parent, ds_row, forget, method, params, seed), method, None


def load_parent(parent: Model, ds_row: Dataset, forget: np.ndarray) -> tuple[torch.nn.Module, UnlearnData]:
    """A stored model's network and what a method unlearning `forget` from it sees (a purged one fails saying so)."""
    arch, recipe = ArchSpec.model_validate(parent.arch), Recipe.model_validate(parent.recipe)
    data = load_for(ds_row)
    net = read_network(parent, ds_row)
    excluded = np.setdiff1d(idsets.decode(parent.forgotten_ids), forget)
    return net, UnlearnData(data, forget, excluded, recipe, arch)


def unlearn_from(
    ctx: JobContext, parent: Model, ds_row: Dataset, forget: np.ndarray, method: str, params: dict, seed: int
) -> Trained:
    """Apply a method to a stored model; the parent's checkpoint is only read."""
    net, udata = load_parent(parent, ds_row, forget)
    start = time.perf_counter()
    details: dict[str, Any] = {}
    new = run_method(
        method,
        net,
        udata,
        params,
        seed=seed,
        device=ctx.device,
        progress=ctx.progress,
        should_stop=ctx.should_stop,
        details=details,
    )
    return Trained(new, udata.dataset, udata, time.perf_counter() - start, utcnow(), details)


@handler("train", on_failure=end_training_model)
def train_model(ctx: JobContext) -> Outcome:
    """Train a model from scratch on its data set minus anything it was told to exclude."""
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        model = session.get(Model, job.model_id)
        ds_row = session.get(Dataset, model.dataset_id)
        arch, recipe, seed = (
            ArchSpec.model_validate(model.arch),
            Recipe.model_validate(model.recipe),
            model.seed,
        )
        model_id, excluded = model.id, idsets.decode(model.forgotten_ids)
    done = train_from_scratch(ctx, ds_row, arch, recipe, seed, np.zeros(0, np.int64), excluded)
    net = done.net
    scores = evaluate(net, done.udata, device=ctx.device)
    metrics = {
        "train_accuracy": scores.get("retain_accuracy"),
        "test_accuracy": scores.get("test_accuracy"),
        # A regression model's accuracies are None: its errors are what says how well it learned.
        **(
            {"train_mae": scores["retain_mae"], "test_mae": scores["test_mae"]}
            if "test_mae" in scores
            else {}
        ),
        "wall_seconds": round(done.wall_seconds, 3),
        "method_finished_at": done.finished_at.isoformat(),
        "n_train": int(done.udata.retain_ids.size),
    }
    weights = checkpoint.to_bytes(net)
    get_store().write_bytes(_checkpoint_key(model_id), weights)

    def apply(session: Session) -> None:
        row = session.get(Model, model_id)
        row.status = ModelStatus.ready
        row.checkpoint = _checkpoint_key(model_id)
        row.checkpoint_sha256 = hashlib.sha256(weights).hexdigest()
        row.metrics = metrics
        audit(session, "model", model_id, "ready", row.tenant_id, **metrics)

    return Outcome(result={"model_id": model_id}, metrics=metrics, apply=apply)


def unlearned_metrics(ctx: JobContext, done: Trained, method: str, forget: np.ndarray) -> dict[str, Any]:
    """What an unlearned child records: its accuracies (or errors) and what the method cost."""
    return {
        **evaluate(done.net, done.udata, device=ctx.device),
        "wall_seconds": round(done.wall_seconds, 3),
        "method_finished_at": done.finished_at.isoformat(),
        "method": method,
        "n_forget": int(forget.size),
        "n_retain": int(done.udata.retain_ids.size),
        **({"method_details": done.details} if done.details else {}),
    }


def store_child(
    ctx: JobContext,
    done: Trained,
    *,
    tenant_id: str,
    dataset_id: str,
    parent_id: str,
    arch: dict[str, Any],
    recipe: dict[str, Any],
    already: np.ndarray,
    forget: np.ndarray,
    method: str,
    seed: int,
    metrics: dict[str, Any],
    name: str | None = None,
) -> tuple[str, Callable[[Session], None]]:
    """Write an unlearned child's checkpoint now; the function returned adds its row (flushed) in the
    transaction that ends the job. Its lineage keeps every id forgotten so far: the parent's and these."""
    child_id = new_id()
    weights = checkpoint.to_bytes(done.net)
    get_store().write_bytes(_checkpoint_key(child_id), weights)
    cumulative = np.union1d(already, forget)

    def add(session: Session) -> None:
        session.add(
            Model(
                id=child_id,
                tenant_id=tenant_id,
                name=name,
                dataset_id=dataset_id,
                parent_id=parent_id,
                arch=arch,
                recipe=recipe,
                seed=seed,
                status=ModelStatus.ready,
                made_by=method,
                forgotten_ids=idsets.encode(cumulative),
                n_forgotten=int(cumulative.size),
                forgotten_sha256=idsets.sha256(cumulative),
                checkpoint=_checkpoint_key(child_id),
                checkpoint_sha256=hashlib.sha256(weights).hexdigest(),
                metrics=metrics,
                job_id=ctx.job_id,
            )
        )
        session.flush()

    return child_id, add


@handler("unlearn")
def unlearn(ctx: JobContext) -> Outcome:
    """Run the method on the parent model and store the result as a new child model."""
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        request = session.get(ForgetRequest, job.forget_request_id)
        parent = session.get(Model, request.model_id)
        ds_row = session.get(Dataset, parent.dataset_id)
        forget = idsets.decode(request.ids)
        already = idsets.decode(parent.forgotten_ids)
        arch, recipe = ArchSpec.model_validate(parent.arch), Recipe.model_validate(parent.recipe)
        parent_id, tenant_id, dataset_id, request_id = (
            parent.id,
            parent.tenant_id,
            parent.dataset_id,
            request.id,
        )
        method, params = ctx.params["method"], ctx.params["params"]
        seed, name = int(ctx.params.get("seed", 0)), ctx.params.get("name")
    done, method, auto = unlearn_requested(ctx, parent, ds_row, forget, method, params, seed)
    metrics = {**unlearned_metrics(ctx, done, method, forget), **({"auto": auto} if auto else {})}
    child_id, add_child = store_child(
        ctx,
        done,
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        parent_id=parent_id,
        arch=arch.model_dump(mode="json"),
        recipe=recipe.model_dump(mode="json"),
        already=already,
        forget=forget,
        method=method,
        seed=seed,
        metrics=metrics,
        name=name,
    )

    def apply(session: Session) -> None:
        add_child(session)
        session.get(ForgetRequest, request_id).result_model_id = child_id
        audit(session, "model", child_id, "ready", tenant_id, parent_id=parent_id, method=method)
        audit(session, "forget_request", request_id, "fulfilled", tenant_id, model_id=child_id)
        auto_purge_parent(session, parent_id, child_id, ctx.job_id)

    result = {"model_id": child_id, **({"auto": auto} if auto else {})}
    return Outcome(result=result, metrics=metrics, apply=apply)
