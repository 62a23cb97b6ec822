"""Selective Synaptic Dampening (Foster et al. 2024): shrink weights far more important to the forget set.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ml.logits import accuracy
from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import batch_gradients
from ml.methods.params import SSDParams
from ml.methods.study import DRAWS
from ml.trainer import Progress


def importances(
    model: nn.Module,
    data: UnlearnData,
    ids: np.ndarray,
    batch_size: int,
    run: Run,
    *,
    progress: Progress | None,
    stage: str,
) -> list[torch.Tensor]:
    """SSD's importances: each parameter's squared batch-loss gradient, averaged over the batches of `ids`.

    A diagonal empirical Fisher estimate per batch rather than per sample, as SSD's calc_importance computes it,
    over ceil(len(ids) / batch_size) batches of even size (see ssd() for why).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    n = 0
    batches = batch_gradients(model, data, ids, batch_size, run, progress=progress, stage=stage, even=True)
    for grads in batches:
        for acc, grad in zip(total, grads, strict=True):
            acc.add_(grad.square())
        n += 1
    return [acc / max(n, 1) for acc in total]


@torch.no_grad()
def dampen(
    params: list[nn.Parameter],
    full: list[torch.Tensor],
    forget: list[torch.Tensor],
    alpha: float,
    dampening: float,
) -> None:
    """Where forget > alpha x full, scale the weight by min(dampening x full / forget, 1); in place."""
    for p, imp_full, imp_forget in zip(params, full, forget, strict=True):
        selected = imp_forget > alpha * imp_full
        factor = (dampening * imp_full / imp_forget).clamp(max=1.0)
        p.copy_(torch.where(selected, p * factor, p))


BACKOFFS = 4
"""The guard doubles alpha at most this many times (10 -> 160 at the default) before it gives up."""


def retain_check_ids(retain_ids: np.ndarray, size: int) -> np.ndarray:
    """The guard's retain rows: `size` of them evenly spaced over the retain set (all when it is smaller),
    so that SSD stays deterministic, every seed the same model."""
    if len(retain_ids) <= size:
        return retain_ids
    return retain_ids[np.linspace(0, len(retain_ids) - 1, size).round().astype(np.int64)]


@torch.no_grad()
def guarded_dampen(
    model: nn.Module,
    data: UnlearnData,
    full: list[torch.Tensor],
    forget: list[torch.Tensor],
    params: SSDParams,
    run: Run,
) -> float | None:
    """SSD's rule, backed off while it costs more than max_retain_drop of accuracy on the guard's retain rows.

    Each back-off doubles alpha, halving the rule's reach, from the weights as they came; after BACKOFFS
    the weights stay as they came. Returns the alpha used, None when none passed.
    """
    weights = [p for p in model.parameters() if p.requires_grad]
    if params.max_retain_drop is None or data.dataset.task == "regression" or not len(data.retain_ids):
        dampen(weights, full, forget, params.alpha, params.dampening)
        return params.alpha
    check = retain_check_ids(data.retain_ids, params.retain_check)
    before = accuracy(model, data.dataset, check, device=run.device)
    kept = [p.detach().clone() for p in weights]
    alpha = params.alpha
    for _ in range(BACKOFFS + 1):
        run.check()
        dampen(weights, full, forget, alpha, params.dampening)
        if accuracy(model, data.dataset, check, device=run.device) >= before - params.max_retain_drop:
            return alpha
        for p, k in zip(weights, kept, strict=True):
            p.copy_(k)
        alpha *= 2
    return None


@register_method("ssd")
def ssd(model: nn.Module, data: UnlearnData, params: SSDParams, run: Run) -> nn.Module:
    """Shrink the weights far more important to the forget set than to the whole training set; no training.

    Source: Foster et al. 2024, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
    Dampening". Importances as its code computes them (batches in order, eval mode, every parameter); the
    global ones come from retain + forget, or a random full_fraction share of it. Ours: both in batches of
    one size, min(batch_size, n_forget) evened out, so that the rule selects alike at every forget-set size
    (see below); and a guard (max_retain_drop, on by default), since the rule, faithful to the paper, still
    wrecked a model now and then: see SSDParams. Records the alpha the guard used in run.details (None: the
    weights were left as they came).
    """
    full = np.concatenate([data.retain_ids, data.forget_ids])
    if params.full_fraction < 1 and len(full):
        rng = np.random.default_rng(run.seed_for(DRAWS))
        size = min(len(full), max(1, round(params.full_fraction * len(full))))
        full = np.sort(rng.choice(full, size=size, replace=False))
    first, second = run.stages([len(data.forget_ids), len(full)])
    # Both sides in batches of one size. A batch's squared mean gradient carries the gradient noise's
    # variance over the batch size, so a forget set smaller than a batch looked up to batch_size / n_f times
    # more important than the same weights on the training set, and small forget sets were over-dampened.
    # For the same reason no batch is short: 144 forget samples in batches of 128 and 16 weighed the 16's
    # noise, 8 times a full batch's, as much as the 128's, so that side looked about 4.5 times as important
    # everywhere, alpha 10 selected up to 47% of a tensor, and test accuracy fell as low as 0.11
    # (benchmarks/bench_ssd.py). The forget set now comes in ceil(n_f / batch_size) batches of even size,
    # and the training set in batches of that size.
    n_forget = max(1, len(data.forget_ids))
    batch = math.ceil(n_forget / math.ceil(n_forget / params.batch_size))
    forget_imp = importances(
        model, data, data.forget_ids, batch, run, progress=first, stage="importance_forget"
    )
    full_imp = importances(model, data, full, batch, run, progress=second, stage="importance_full")
    # What the guard settled on: the alpha that dampened, or None when it left the weights as they came.
    run.details["alpha"] = guarded_dampen(model, data, full_imp, forget_imp, params, run)
    return model
