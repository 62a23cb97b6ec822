"""SalUn (Fan et al. 2024): random labels on the forget set, updating only the salient weights.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _fit, _gradient_hooks, _require_forget, batch_gradients
from ml.methods.params import SalUnParams
from ml.methods.study import DRAWS, STAGE_1, random_labels
from ml.trainer import Progress


def saliency_masks(
    model: nn.Module, data: UnlearnData, sparsity: float, batch_size: int, run: Run, progress: Progress | None
) -> dict[str, torch.Tensor]:
    """SalUn's mask, by parameter name: the `sparsity` share of all weights with the largest |gradient| of the
    forget loss.

    The gradient is summed over batches of the forget set in eval mode, as SalUn's generate_mask.py does;
    the ranking is global over every parameter tensor, ties broken by position.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    total = [torch.zeros_like(p) for p in params]
    for grads in batch_gradients(
        model, data, data.forget_ids, batch_size, run, progress=progress, stage="saliency"
    ):
        for acc, grad in zip(total, grads, strict=True):
            acc.add_(grad)
    flat = torch.cat([acc.abs().flatten() for acc in total])
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    k = round(sparsity * flat.numel())
    if k:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    return {
        name: mask.view_as(p)
        for (name, p), mask in zip(named, keep.split([p.numel() for p in params]), strict=True)
    }


def masked_decay(
    model: nn.Module, masks: Mapping[str, torch.Tensor], weight_decay: float
) -> AbstractContextManager[None]:
    """SalUn's gradient while entered: mask * (gradient + weight_decay * theta), the mask by parameter name.

    The optimiser then runs without weight decay, so weights outside the mask never move. A pack passes its
    wide network and each mask stacked once per network (the same mask for all).
    """
    return _gradient_hooks(model, lambda name, p, grad: masks[name] * (grad + weight_decay * p.detach()))


@register_method("salun")
def salun(model: nn.Module, data: UnlearnData, params: SalUnParams, run: Run) -> nn.Module:
    """Random labels on the forget set, mixed with retain, updating only the weights salient to forgetting.

    Source: Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency"
    (random-label SalUn, uniformly random labels drawn once, retain and forget shuffled together). Weights
    outside the mask never move: the optimiser runs without weight decay and the gradient hook adds it,
    masked (SGD adds weight_decay x theta to the gradient before momentum; so does the hook).
    """
    _require_forget(data, "salun")
    dataset = data.dataset
    n_forget, n_retain = len(data.forget_ids), len(data.retain_ids)
    first, second = run.stages([n_forget, params.epochs * (n_retain + n_forget)])
    masks = saliency_masks(model, data, params.sparsity, params.batch_size, run, first)
    noise = random_labels(dataset, n_forget, np.random.default_rng(run.seed_for(DRAWS)))
    with masked_decay(model, masks, params.weight_decay):
        _fit(
            model,
            data,
            np.concatenate([data.retain_ids, data.forget_ids]),
            params,
            run,
            epochs=params.epochs,
            lr=params.lr,
            stage="salun",
            index=STAGE_1,
            progress=second,
            labels=np.concatenate([dataset.train_y[data.retain_ids], noise]),
            weight_decay=0.0,
        )
    return model
