"""Perturb a share of every weight tensor, then fine-tune on retain (the NeurIPS 2023 challenge's pattern).

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import torch
from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _fit
from ml.methods.params import NoiseResetParams
from ml.methods.study import DRAWS, REPAIR, compared, reinit_where


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


@register_method("noise_reset")
def noise_reset(model: nn.Module, data: UnlearnData, params: NoiseResetParams, run: Run) -> nn.Module:
    """Perturb a random share of every weight tensor (fresh values or Gaussian noise), then fine-tune on retain.

    Source: the pattern shared by top entries of the NeurIPS 2023 Machine Unlearning challenge (Triantafillou
    et al. 2024, "Are we making progress in unlearning?"): damage the weights, then repair with a short
    fine-tune on the retain set. Weight tensors of rank >= 2 (convolutions, linear layers) are perturbed.
    """
    generator = torch.Generator(device=run.device)
    generator.manual_seed(run.seed_for(DRAWS))
    for weight in compared(model, last_layer_only=False).values():
        perturb(weight, params, generator)
    _fit(
        model,
        data,
        data.retain_ids,
        params,
        run,
        epochs=params.epochs,
        lr=params.lr,
        stage="retain",
        index=REPAIR,
        progress=run.progress,
    )
    return model
