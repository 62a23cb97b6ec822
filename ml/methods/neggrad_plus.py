"""NegGrad+ (Kurmanji et al. 2023): descend the retain loss and climb the forget loss in one step.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _augment, _Loop, _require_forget, _Rows, _running_stats_kept, _task_loss, _update
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
    loop = _Loop(
        run, run.progress, "neggrad_plus", params.epochs * retain.batches(params.batch_size), params.epochs
    )
    weight = forget_weight(params, len(data.forget_ids), len(data.retain_ids))
    run.details["forget_weight"] = weight
    forget_batches = forget.endless(params.batch_size)
    model.train()
    for epoch in range(1, params.epochs + 1):
        for x_r, y_r in retain.epoch(params.batch_size):
            x_f, y_f = next(forget_batches)
            loop.before()
            retain_loss = _task_loss(model(x_r), y_r, dataset)
            with _running_stats_kept(model):
                forget_loss = _task_loss(model(x_f), y_f, dataset)
            loss = params.alpha * retain_loss - weight * forget_loss
            _update(optimizer, loss)
            loop.after(loss, len(y_r), epoch)
    return model
