"""Perturb a share of every weight tensor, then fine-tune on retain (the NeurIPS 2023 challenge's pattern).

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ml.logits import scored_outputs
from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.cost import repair_passes, sample_passes
from ml.methods.loops import Batch, _augment, _paired_steps, _Rows, _running_stats_kept, _task_loss
from ml.methods.params import NoiseResetParams
from ml.methods.study import DRAWS, STAGE_1, STAGE_2, _repair, compared, reinit_where
from ml.metrics.epsilon import statistic
from ml.trainer import Progress, make_optimizer


@torch.no_grad()
def perturb(weight: torch.Tensor, params: NoiseResetParams, generator: torch.Generator) -> None:
    """Perturb exactly round(fraction x n) entries of `weight`, drawn at random, in place."""
    flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    k = round(params.fraction * weight.numel())
    flat[torch.randperm(weight.numel(), generator=generator, device=weight.device)[:k]] = True
    mask = flat.view_as(weight)
    if params.mode == "reset":
        reinit_where(weight, mask)
    else:
        noise = torch.randn(weight.shape, generator=generator, device=weight.device, dtype=weight.dtype)
        weight.add_(torch.where(mask, noise * params.noise_scale * weight.std(), 0.0))


RANK_SLOPE, RANK_PIVOT = 2.5, 0.8
"""forget_weighting "rank": a forget sample at rank quantile q of the margins climbs with weight
RANK_SLOPE x (RANK_PIVOT - q) (NoiseResetParams says how they were chosen)."""


def margins(model: nn.Module, data: UnlearnData, run: Run) -> np.ndarray:
    """How sure `model` is of each forget sample: the hinge of its logits (a regressor: -|error|), the
    statistic epsilon-hat compares."""
    dataset, ids = data.dataset, data.forget_ids
    outputs = scored_outputs(model, dataset, ids, device=run.device)
    return statistic(outputs[None], dataset.train_y[ids], dataset.task)[0]


def rank_weights(margins: np.ndarray) -> np.ndarray:
    """Each sample's climb weight from its margin's rank among all: RANK_SLOPE x (RANK_PIVOT - q), q = (rank +
    0.5) / n from the least sure (weight 2 at the bottom, 0.75 on average) to the surest, whose weight is
    negative past RANK_PIVOT (its loss descends). Ties rank in the forget set's order."""
    rank = np.argsort(np.argsort(np.asarray(margins), kind="stable"), kind="stable")
    q = (rank + 0.5) / len(rank)
    return (RANK_SLOPE * (RANK_PIVOT - q)).astype(np.float32)


def climb(
    model: nn.Module,
    data: UnlearnData,
    params: NoiseResetParams,
    run: Run,
    progress: Progress | None,
    weights: np.ndarray | None = None,
) -> None:
    """forget_epochs passes over the forget set, each forget batch paired with the next retain batch in one step
    that descends the retain loss and climbs forget_weight x the forget samples' losses, each clamped at
    forget_target (no gradient from a sample past it) and, given `weights`, times its own."""
    dataset = data.dataset
    forget = _Rows(data, data.forget_ids, run, index=STAGE_1, augment=_augment(data, params), weights=weights)
    retain = _Rows(data, data.retain_ids, run, index=STAGE_2, augment=_augment(data, params))
    optimizer = make_optimizer(
        model, "sgd", params.forget_lr, params.momentum, params.nesterov, params.weight_decay
    )

    def step(forget_batch: Batch, retain_batch: Batch) -> torch.Tensor:
        (x_f, y_f), (x_r, y_r) = forget_batch, retain_batch
        retain_loss = _task_loss(model(x_r), y_r, dataset)
        with _running_stats_kept(model):
            losses = torch.clamp(
                _task_loss(model(x_f), y_f, dataset, reduction="none"), max=params.forget_target
            )
        if forget.taken_weights is not None:
            losses = losses * forget.taken_weights
        return retain_loss - params.forget_weight * losses.mean()

    _paired_steps(
        model,
        run,
        progress,
        "climb",
        optimizer,
        forget,
        retain,
        epochs=params.forget_epochs,
        batch_size=params.batch_size,
        step_loss=step,
    )


@register_method("noise_reset")
def noise_reset(model: nn.Module, data: UnlearnData, params: NoiseResetParams, run: Run) -> nn.Module:
    """Perturb a random share of every weight tensor (fresh values or Gaussian noise), then fine-tune on retain.

    Source: the pattern shared by top entries of the NeurIPS 2023 Machine Unlearning challenge (Triantafillou
    et al. 2024, "Are we making progress in unlearning?"): damage the weights, then repair with a short
    fine-tune on the retain set. Weight tensors of rank >= 2 (convolutions, linear layers) are perturbed.

    Ours: with forget_epochs, a climb between the noise and the repair (climb()): NegGrad+'s paired step with
    each forget sample's loss clamped at forget_target, so a sample stops being pushed once it is as unsure
    as that; the forget forwards leave BatchNorm's running statistics alone. With forget_weighting "rank",
    each sample's loss weighed by rank_weights() of the original's margins, read before the noise. Off by
    default (see NoiseResetParams for what it bought and cost).
    """
    repair = repair_passes(params, len(data.retain_ids))
    first, second = run.stages([sample_passes("noise_reset", params, data) - repair, repair])
    climbs = bool(params.forget_epochs and len(data.forget_ids))
    weights = (
        rank_weights(margins(model, data, run)) if climbs and params.forget_weighting == "rank" else None
    )
    generator = torch.Generator(device=run.device)
    generator.manual_seed(run.seed_for(DRAWS))
    for weight in compared(model, last_layer_only=False).values():
        perturb(weight, params, generator)
    if climbs:
        climb(model, data, params, run, first, weights)
    _repair(model, data, params, run, second)
    return model
