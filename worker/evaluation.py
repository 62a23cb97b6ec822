"""Many-seed protocol: the run handlers (a job trains one model or a pack of them) and the finalizers that score them."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import idsets
from core.artifacts import get_store
from core.db import session_scope
from core.evaluations import usable_reference_runs
from core.jobs import audit
from core.settings import get_settings
from core.tables import Dataset, Evaluation, Job, JobStatus, Model, ReferenceSet, Run, Study, utcnow
from ml.logits import evaluate, logits, scored_outputs
from ml.methods.cost import Workload, cost
from ml.methods.packed import run_packed
from ml.metrics.divergence import mean_kl
from ml.metrics.epsilon import (
    EpsilonResult,
    epsilon_from_statistics,
    json_number,
    statistic,
)
from ml.metrics.mia import mia_efficacy
from ml.metrics.neurips import MIN_MODELS, neurips_score
from ml.metrics.resolution import null_epsilon, resolution
from ml.plots import epsilon_curve_png, statistic_histograms_png
from ml.specs import ArchSpec, Recipe
from worker.context import JobContext
from worker.handlers import (
    Outcome,
    Trained,
    handler,
    load_parent,
    train_from_scratch,
    train_pack_from_scratch,
    unlearn_from,
)

FINALIZERS: dict[str, Any] = {}


def finalizer(kind: str):
    def wrap(fn):
        FINALIZERS[kind] = fn
        return fn

    return wrap


def save_array(key: str, array: np.ndarray) -> str:
    return get_store().write_array(key, array)


def load_array(key: str) -> np.ndarray:
    return get_store().read_array(key)


def labels_key(rs_id: str) -> str:
    return f"reference_sets/{rs_id}/labels.npy"


def _forget_outputs(done: Trained, ctx: JobContext) -> np.ndarray:
    """Forget-set logits [n, C]; for regression, predictions in the targets' units [n]."""
    return scored_outputs(done.net, done.data, done.udata.forget_ids, device=ctx.device)


MIA_SAMPLES = 2000
"""Retain and test samples the membership attack trains on (each side, at most)."""


def _mia(done: Trained, forget_logits: np.ndarray, ctx: JobContext) -> float:
    """MIA-efficacy of this model: the share of forget samples an SVC attack calls non-members."""
    data, rng = done.data, np.random.default_rng(0)
    retain = np.sort(rng.permutation(done.udata.retain_ids)[:MIA_SAMPLES])
    test = np.sort(rng.permutation(data.n_test)[:MIA_SAMPLES])
    return mia_efficacy(
        logits(done.net, data, retain, device=ctx.device),
        data.train_y[retain],
        logits(done.net, data, test, split="test", device=ctx.device),
        data.test_y[test],
        forget_logits,
        data.train_y[done.udata.forget_ids],
    )


def _store_run(ctx: JobContext, run_id: str, done: Trained) -> Outcome:
    outputs = _forget_outputs(done, ctx)
    outputs_key = save_array(f"runs/{run_id}/forget_outputs.npy", outputs)
    metrics = {
        **evaluate(done.net, done.udata, device=ctx.device),
        "wall_seconds": round(done.wall_seconds, 4),
    }
    if done.data.task != "regression":
        metrics["mia_efficacy"] = _mia(done, outputs, ctx)

    def apply(session: Session) -> None:
        run = session.get(Run, run_id)
        run.outputs, run.metrics = outputs_key, metrics

    return Outcome(result={"run_id": run_id}, metrics=metrics, apply=apply)


@handler("reference_run")
def reference_run(ctx: JobContext) -> Outcome:
    """Retrain from scratch without the forget set: the job's reference models, trained as one pack."""
    with session_scope() as session:
        runs = session.execute(select(Run).where(Run.job_id == ctx.job_id).order_by(Run.seed)).scalars().all()
        rs = session.get(ReferenceSet, runs[0].reference_set_id)
        ds_row = session.get(Dataset, rs.dataset_id)
        forget, excluded = idsets.decode(rs.forget_ids), idsets.decode(rs.excluded_ids)
        arch, recipe, rs_id = ArchSpec(**rs.arch), Recipe(**rs.recipe), rs.id
        seeds = {r.id: r.seed for r in runs}
    if len(seeds) == 1:
        done = [train_from_scratch(ctx, ds_row, arch, recipe, *seeds.values(), forget, excluded)]
    else:
        done = train_pack_from_scratch(ctx, ds_row, arch, recipe, list(seeds.values()), forget, excluded)
    if not get_store().exists(labels_key(rs_id)):
        save_array(labels_key(rs_id), done[0].data.train_y[done[0].udata.forget_ids])
    return _store_pack(ctx, list(seeds), done)


def _store_pack(ctx: JobContext, run_ids: list[str], done: list[Trained]) -> Outcome:
    """Each model of a job stored as the run it is; one job's outcome for them all."""
    stored = [_store_run(ctx, run_id, one) for run_id, one in zip(run_ids, done, strict=True)]
    if len(stored) == 1:
        return stored[0]

    def apply(session: Session) -> None:
        for outcome in stored:
            outcome.apply(session)  # type: ignore[misc]

    metrics = {"n_models": len(stored), "wall_seconds": round(sum(d.wall_seconds for d in done), 4)}
    return Outcome(result={"run_ids": run_ids}, metrics=metrics, apply=apply)


def unlearn_pack_from(
    ctx: JobContext,
    parent: Model,
    ds_row: Dataset,
    forget: np.ndarray,
    method: str,
    params: dict,
    seeds: list[int],
) -> list[Trained]:
    """unlearn_from for several seeds in one pack (ml/methods/packed.py), each model as its own result."""
    net, udata = load_parent(parent, ds_row, forget)
    start = time.perf_counter()
    nets = run_packed(
        method,
        net,
        udata,
        params,
        seeds=seeds,
        device=ctx.device,
        progress=ctx.progress,
        should_stop=ctx.should_stop,
        pack_size=get_settings().pack_size or None,  # unset: what the device holds
    )
    # Each model's wall time is its share of the pack's, as for reference packs.
    share, finished = (time.perf_counter() - start) / len(nets), utcnow()
    return [Trained(one, udata.dataset, udata, share, finished) for one in nets]


@handler("unlearn_run")
def unlearn_run(ctx: JobContext) -> Outcome:
    """The evaluated method applied to the evaluated model: one seed, or a pack of seeds trained together."""
    with session_scope() as session:
        runs = session.execute(select(Run).where(Run.job_id == ctx.job_id).order_by(Run.seed)).scalars().all()
        evaluation = session.get(Evaluation, runs[0].evaluation_id)
        rs = session.get(ReferenceSet, evaluation.reference_set_id)
        model = session.get(Model, evaluation.model_id)
        ds_row = session.get(Dataset, model.dataset_id)
        forget, seeds = idsets.decode(rs.forget_ids), {r.id: r.seed for r in runs}
        method, params = evaluation.method, evaluation.params
    if len(seeds) == 1:
        done = [unlearn_from(ctx, model, ds_row, forget, method, params, *seeds.values())]
    else:
        done = unlearn_pack_from(ctx, model, ds_row, forget, method, params, list(seeds.values()))
    return _store_pack(ctx, list(seeds), done)


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, 95% half-width (1.96 std / sqrt(n)) and count: small N is noisy, and says so."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    return {
        "mean": float(arr.mean()),
        "ci95": float(1.96 * arr.std() / np.sqrt(arr.size)),
        "n": int(arr.size),
    }


def _metric_spreads(runs: list[Run], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: spread([r.metrics.get(k) for r in runs]) for k in keys}


def score_runs(
    task: str, labels: np.ndarray, refs: list[Run], unls: list[Run], delta: float, budget: float | None = None
) -> tuple[dict[str, Any], EpsilonResult, np.ndarray, np.ndarray]:
    """Epsilon-hat, the NeurIPS score, MIA-efficacy, KL to the references, accuracy (or MAE) spreads, cost."""
    ref_out = np.stack([load_array(r.outputs) for r in refs])
    unl_out = np.stack([load_array(r.outputs) for r in unls])
    regression = task == "regression"
    keys = (
        ("retain_mae", "forget_mae", "test_mae")
        if regression
        else ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_efficacy")
    )
    ref_stat, unl_stat = statistic(ref_out, labels, task), statistic(unl_out, labels, task)
    eps = epsilon_from_statistics(ref_stat, unl_stat, delta=delta)  # epsilon_hat(_regression) of the outputs
    if regression:
        neurips = kl = None
    else:
        kl = mean_kl(ref_out, unl_out)
        neurips = (
            None
            if min(len(refs), len(unls)) < MIN_MODELS
            else neurips_score(
                ref_out,
                unl_out,
                labels,
                reference_retain_accuracy=[r.metrics["retain_accuracy"] for r in refs],
                reference_test_accuracy=[r.metrics["test_accuracy"] for r in refs],
                unlearned_retain_accuracy=[r.metrics["retain_accuracy"] for r in unls],
                unlearned_test_accuracy=[r.metrics["test_accuracy"] for r in unls],
            ).to_json()
        )
    unl_wall = spread([r.metrics["wall_seconds"] for r in unls])
    ref_wall = spread([r.metrics["wall_seconds"] for r in refs])
    results = {
        **eps.to_json(),
        **resolution(eps, ref_stat, unl_stat).to_json(),
        "epsilon_hat_retrain": json_number(null_epsilon(len(refs), len(unls), delta).epsilon_hat),
        "delta": delta,
        "neurips": neurips,
        "kl_to_reference": kl,
        **_metric_spreads(unls, keys),
        "reference": _metric_spreads(refs, keys),
        "wall_seconds": unl_wall,
        "cost_vs_retrain": unl_wall["mean"] / ref_wall["mean"] if ref_wall["mean"] else None,
        "budget_vs_retrain": budget,
        "curve": {"delta": eps.deltas.tolist(), "epsilon_hat": [json_number(v) for v in eps.curve]},
        "per_sample_epsilon": [json_number(v) for v in eps.per_sample],
        "reference_run_ids": [r.id for r in refs],
        "unlearned_run_ids": [r.id for r in unls],
    }
    return results, eps, ref_stat, unl_stat


@finalizer("evaluate")
def finalize_evaluation(parent_id: str) -> Outcome:
    with session_scope() as session:
        job = session.get(Job, parent_id)
        evaluation = session.get(Evaluation, job.params["evaluation_id"])
        rs = session.get(ReferenceSet, evaluation.reference_set_id)
        ds_row = session.get(Dataset, rs.dataset_id)
        task, n_train = ds_row.task, ds_row.n_train
        refs = [r for r, j in usable_reference_runs(session, rs.id) if j.status == JobStatus.succeeded]
        refs = refs[: evaluation.n_models]
        unls = list(
            session.execute(
                select(Run).where(Run.evaluation_id == evaluation.id).order_by(Run.seed)
            ).scalars()
        )
        ev_id, method, delta, rs_id = evaluation.id, evaluation.method, evaluation.delta, rs.id
        n_retain = n_train - rs.n_forget - idsets.decode(rs.excluded_ids).size
        budget = cost(method, evaluation.params, Workload(n_retain, rs.n_forget, Recipe(**rs.recipe)))
    if len(refs) < evaluation.n_models:
        raise RuntimeError(f"only {len(refs)} of {evaluation.n_models} reference runs succeeded")
    labels = load_array(labels_key(rs_id))
    results, eps, ref_stat, unl_stat = score_runs(task, labels, refs, unls, delta, budget)
    plots = {
        "epsilon-delta": epsilon_curve_png({method: eps}, title=f"{method}: epsilon-hat over delta"),
        "histograms": statistic_histograms_png(
            ref_stat, unl_stat, statistic="hinge" if task != "regression" else "-|error|"
        ),
    }
    for name, png in plots.items():
        get_store().write_bytes(f"evaluations/{ev_id}/{name}.png", png)
    summary = {
        k: results[k]
        for k in (
            "epsilon_hat",
            "mean",
            "ci95",
            "n_samples",
            "n_reference",
            "n_unlearned",
            "n_infinite",
            "n_nan",
            "epsilon_ceiling",
            "n_at_ceiling",
            "censored",
            "epsilon_hat_ci95_models",
            "epsilon_hat_smooth",
            "delta",
            "cost_vs_retrain",
            "budget_vs_retrain",
            "kl_to_reference",
        )
    }
    summary["method"] = method

    def apply(session: Session) -> None:
        row = session.get(Evaluation, ev_id)
        row.results = results
        audit(session, "evaluation", ev_id, "scored", row.tenant_id, epsilon_hat=results["epsilon_hat"])

    return Outcome(result={"evaluation_id": ev_id}, metrics=summary, apply=apply)


@finalizer("reference")
def finalize_reference(parent_id: str) -> Outcome:
    with session_scope() as session:
        job = session.get(Job, parent_id)
        rs_id = job.params["reference_set_id"]
        runs = [r for r, j in usable_reference_runs(session, rs_id) if j.status == JobStatus.succeeded]
    keys = tuple(
        k
        for k in (
            "retain_accuracy",
            "forget_accuracy",
            "test_accuracy",
            "retain_mae",
            "forget_mae",
            "test_mae",
        )
        if runs and runs[0].metrics.get(k) is not None
    )
    metrics = {
        "n_models": len(runs),
        **_metric_spreads(runs, keys),
        "wall_seconds": spread([r.metrics["wall_seconds"] for r in runs]),
    }
    return Outcome(result={"reference_set_id": rs_id}, metrics=metrics)


@finalizer("study")
def finalize_study(parent_id: str) -> Outcome:
    with session_scope() as session:
        job = session.get(Job, parent_id)
        study = session.get(Study, job.params["study_id"])
        evaluations = list(
            session.execute(select(Evaluation).where(Evaluation.study_id == study.id)).scalars()
        )
        table = {
            e.method: {
                k: e.results.get(k)
                for k in (
                    "epsilon_hat",
                    "epsilon_hat_ci95_models",
                    "epsilon_ceiling",
                    "n_at_ceiling",
                    "n_infinite",
                    "epsilon_hat_smooth",
                    "ci95",
                    "cost_vs_retrain",
                )
            }
            for e in evaluations
        }
        study_id = study.id
    return Outcome(result={"study_id": study_id}, metrics={"methods": table})
