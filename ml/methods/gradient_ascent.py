"""Gradient ascent on the forget set (Jia et al. 2023's GA).

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _fit, _gradient_hooks, _running_stats_kept, batch_share
from ml.methods.params import GradientAscentParams
from ml.methods.study import STAGE_1


def ascent_lr(params: GradientAscentParams, n_forget: int) -> float:
    """The lr gradient ascent climbs at: params.lr, times n_forget / batch_size for a forget set smaller than a
    batch when scale_lr is on."""
    return params.lr * batch_share(n_forget, params.batch_size) if params.scale_lr else params.lr


@contextmanager
def ascending(model: nn.Module) -> Iterator[None]:
    """The trainer's steps turned into ascent: every loss gradient negated. BatchNorm's running statistics stay
    the original's, since every forward is on the forget set (in training mode they would become the forget
    batches' statistics, which the unlearned model would then normalise every input with)."""
    with _gradient_hooks(model, lambda _name, _p, grad: -grad), _running_stats_kept(model):
        yield


@register_method("gradient_ascent")
def gradient_ascent(model: nn.Module, data: UnlearnData, params: GradientAscentParams, run: Run) -> nn.Module:
    """Climb the loss on the forget set: the trainer's steps with every loss gradient negated.

    Source: the GA baseline of Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning" (Thudi et al.
    2022 before it). Weight decay is the optimiser's, so it still pulls weights towards zero, as there.

    Ours: with scale_lr, a forget set smaller than a batch climbs at lr x n_forget / batch_size, as if its
    batch were filled with samples that add nothing. Each pass over such a set is one step whatever its size,
    and a step's mean-loss gradient concentrated on a few samples does more damage the fewer they are (see
    GradientAscentParams for the figures). The lr it climbed at is recorded in run.details. BatchNorm's
    running statistics are left as the original's (ascending()).
    """
    lr = ascent_lr(params, len(data.forget_ids))
    run.details["lr"] = lr
    with ascending(model):
        _fit(
            model,
            data,
            data.forget_ids,
            params,
            run,
            epochs=params.epochs,
            lr=lr,
            stage="ascent",
            index=STAGE_1,
            progress=run.progress,
        )
    return model
