"""NegGrad+ (Kurmanji et al. 2023): descend the retain loss and climb the forget loss in one step.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import torch
from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import (
    Batch,
    _augment,
    _paired_steps,
    _require_forget,
    _Rows,
    _running_stats_kept,
    _task_loss,
)
from ml.methods.params import NegGradPlusParams
from ml.methods.study import STAGE_1, STAGE_2
from ml.trainer import make_optimizer


def forget_weight(params: NegGradPlusParams, n_forget: int, n_retain: int) -> float:
    """The weight the forget loss is subtracted with: 1 - alpha, times n_forget / n_retain when per_sample is
    on, so that each forget sample climbs with (1 - alpha) / alpha of the weight a retain sample descends with,
    whatever the forget set's size."""
    weight = 1.0 - params.alpha
    if params.per_sample and n_retain:
        weight *= n_forget / n_retain
    return weight


@register_method("neggrad_plus")
def neggrad_plus(model: nn.Module, data: UnlearnData, params: NegGradPlusParams, run: Run) -> nn.Module:
    """Descend the retain loss and climb the forget loss in one step: alpha L_retain - (1 - alpha) L_forget.

    Source: Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning" (NegGrad+). An epoch is one pass over
    the retain set; each retain batch is paired with the next forget batch, the forget set cycling.

    Ours: with per_sample (the default) the forget loss is weighted by n_forget / n_retain (forget_weight()).
    Both losses are batch means, so without it a forget sample's share of the climb per epoch is about
    (retain batches) / n_forget: the smaller the set, the harder each of its samples is pushed. And the
    forget forward leaves BatchNorm's running statistics alone: it normalises with its batch's statistics,
    but the statistics the model keeps come from retain batches only. Updated by every forget batch (half
    of all forwards), 7 forget samples cost 2 points of test accuracy even at zero forget weight (see
    NegGradPlusParams for the figures). The forget loss's weight is recorded in run.details.
    """
    _require_forget(data, "neggrad_plus")
    dataset = data.dataset
    retain = _Rows(data, data.retain_ids, run, index=STAGE_1, augment=_augment(data, params))
    forget = _Rows(data, data.forget_ids, run, index=STAGE_2, augment=_augment(data, params))
    optimizer = make_optimizer(model, "sgd", params.lr, params.momentum, params.nesterov, params.weight_decay)
    weight = forget_weight(params, len(data.forget_ids), len(data.retain_ids))
    run.details["forget_weight"] = weight

    def step(retain_batch: Batch, forget_batch: Batch) -> torch.Tensor:
        (x_r, y_r), (x_f, y_f) = retain_batch, forget_batch
        retain_loss = _task_loss(model(x_r), y_r, dataset)
        with _running_stats_kept(model):
            forget_loss = _task_loss(model(x_f), y_f, dataset)
        return params.alpha * retain_loss - weight * forget_loss

    _paired_steps(
        model,
        run,
        run.progress,
        "neggrad_plus",
        optimizer,
        retain,
        forget,
        epochs=params.epochs,
        batch_size=params.batch_size,
        step_loss=step,
    )
    return model
