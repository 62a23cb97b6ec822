"""Selective Synaptic Dampening (Foster et al. 2024): shrink weights far more important to the forget set.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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

    A diagonal empirical Fisher estimate per batch rather than per sample, as SSD's calc_importance computes it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    n = 0
    for grads in batch_gradients(model, data, ids, batch_size, run, progress=progress, stage=stage):
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


@register_method("ssd")
def ssd(model: nn.Module, data: UnlearnData, params: SSDParams, run: Run) -> nn.Module:
    """Shrink the weights far more important to the forget set than to the whole training set; no training.

    Source: Foster et al. 2024, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
    Dampening". Importances as its code computes them (batches in order, eval mode, every parameter); the
    global ones come from retain + forget, or a random full_fraction share of it. Ours: both in batches of
    min(batch_size, n_forget), so that the rule selects alike at every forget-set size (see below).
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
    batch = min(params.batch_size, max(1, len(data.forget_ids)))
    forget_imp = importances(
        model, data, data.forget_ids, batch, run, progress=first, stage="importance_forget"
    )
    full_imp = importances(model, data, full, batch, run, progress=second, stage="importance_full")
    dampen(
        [p for p in model.parameters() if p.requires_grad],
        full_imp,
        forget_imp,
        params.alpha,
        params.dampening,
    )
    return model
