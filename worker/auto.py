"""`"method": "auto"` in a job: proxy references (trained or reused), the search, then the winner on the real set.

The search itself is ml/methods/auto.py (pure); this module gives it the callables that train, unlearn and
score, and reports where the job stands: the reference training, then trial i of n, then the real run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core import auto as store
from core import idsets
from core.artifacts import get_store
from core.db import session_scope
from core.tables import Dataset, Model
from ml.logits import accuracy, logits
from ml.methods import UnlearnData, Workload
from ml.methods.auto import ProxyTarget, TrialRecord, draw_proxies, proxy_evaluator, search
from ml.methods.params import AutoParams
from ml.metrics.epsilon import hinge_statistic
from ml.specs import ArchSpec, Recipe
from ml.trainer import ProgressEvent
from worker.context import JobContext
from worker.data import load_for
from worker.evaluation import labels_key
from worker.handlers import Trained, read_network, train_pack_from_scratch, unlearn_from

REFERENCES_SHARE, SEARCH_SHARE = 0.3, 0.6
"""Shares of the job's progress bar: reference training, the search; the real run takes the rest."""


@dataclass(frozen=True)
class Stage:
    """A progress report between trials (JobContext.progress reads these attributes)."""

    fraction: float
    stage: str
    step: int | None = None
    steps: int | None = None


@dataclass(frozen=True)
class _Part:
    """The job's context as one stage of it sees it: its progress rescaled into [start, start + width]."""

    ctx: JobContext
    start: float
    width: float
    stage: str

    @property
    def device(self) -> str:
        return self.ctx.device

    def progress(self, event: ProgressEvent) -> None:
        self.ctx.progress(replace(event, fraction=self.start + self.width * event.fraction, stage=self.stage))

    def should_stop(self) -> bool:
        return self.ctx.should_stop()


def unlearn_auto(
    ctx: JobContext, parent: Model, ds_row: Dataset, forget: np.ndarray, params: dict[str, Any], seed: int
) -> tuple[Trained, str, dict[str, Any]]:
    """Choose a method for this model and apply it to `forget`: (the result, the method, the auto block)."""
    settings = AutoParams.model_validate(params)
    data = load_for(ds_row)
    if data.task == "regression":
        raise ValueError("auto compares class outputs; choose a method for a regression model")
    arch, recipe = ArchSpec.model_validate(parent.arch), Recipe.model_validate(parent.recipe)
    excluded = np.setdiff1d(idsets.decode(parent.forgotten_ids), forget)
    trained_on = UnlearnData(data, np.zeros(0, np.int64), excluded, recipe, arch).retain_ids
    draws = draw_proxies(data.train_y, forget, trained_on, settings.proxies, store.proxy_seed(parent.id))
    proxies = _references(ctx, parent, ds_row, draws, excluded, settings.n_models)
    net = read_network(parent, ds_row)
    evaluate = proxy_evaluator(
        net, proxies, settings.n_models, device=ctx.device, should_stop=ctx.should_stop
    )

    def on_trial(i: int, n: int, record: TrialRecord) -> None:
        elapsed = time.monotonic() - begun
        done = max(i / n, min(1.0, elapsed / settings.time_budget_seconds))
        ctx.progress(Stage(REFERENCES_SHARE + SEARCH_SHARE * done, f"auto: trial {i} of {n}", i, n))

    begun = time.monotonic()
    work = Workload(len(np.setdiff1d(trained_on, forget)), len(forget), recipe)
    result = search(evaluate, work, settings, seed=seed, on_trial=on_trial)
    ctx.progress(Stage(REFERENCES_SHARE + SEARCH_SHARE, f"auto: applying {result.chosen_method}"))
    done = unlearn_from(ctx, parent, ds_row, forget, result.chosen_method, result.params, seed)
    return done, result.chosen_method, result.to_json()


def _references(
    ctx: JobContext,
    parent: Model,
    ds_row: Dataset,
    draws: list[np.ndarray],
    excluded: np.ndarray,
    n_models: int,
) -> list[ProxyTarget]:
    """Each proxy with n_models reference models: those stored for its key, and the missing ones trained now."""
    arch, recipe = ArchSpec.model_validate(parent.arch), Recipe.model_validate(parent.recipe)
    proxies = []
    for k, ids in enumerate(draws):
        rs_id = store.reference_set_for(
            tenant_id=parent.tenant_id,
            dataset_id=ds_row.id,
            proxy=ids,
            excluded=excluded,
            arch=parent.arch,
            recipe=parent.recipe,
        )
        with session_scope() as session:
            stored = store.stored_runs(session, rs_id)[:n_models]
            seeds = store.free_seeds(session, rs_id, n_models - len(stored))
        outputs = [get_store().read_array(run.outputs) for run in stored]
        if seeds:
            stage = f"auto: references {k + 1} of {len(draws)}"
            part = _Part(ctx, REFERENCES_SHARE * k / len(draws), REFERENCES_SHARE / len(draws), stage)
            trained = train_pack_from_scratch(part, ds_row, arch, recipe, seeds, ids, excluded)  # type: ignore[arg-type]
            fresh = []
            for s, one in zip(seeds, trained, strict=True):
                out = logits(one.net, one.data, ids, device=ctx.device)
                key = get_store().write_array(f"reference_sets/{rs_id}/auto/{s}.npy", out)
                metrics = {
                    "test_accuracy": accuracy(one.net, one.data, None, split="test", device=ctx.device),
                    "wall_seconds": round(one.wall_seconds, 4),
                }
                fresh.append((s, key, metrics))
                outputs.append(out)
            if not get_store().exists(labels_key(rs_id)):  # what an evaluation reusing the set reads
                get_store().write_array(labels_key(rs_id), trained[0].data.train_y[ids])
            with session_scope() as session:
                store.add_reference_runs(
                    session, tenant_id=parent.tenant_id, rs_id=rs_id, job_id=ctx.job_id, runs=fresh
                )
        data = load_for(ds_row)
        reference = hinge_statistic(np.stack(outputs), data.train_y[ids])
        proxies.append(ProxyTarget(UnlearnData(data, ids, excluded, recipe, arch), reference))
    return proxies
