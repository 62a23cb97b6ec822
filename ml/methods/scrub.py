"""SCRUB (Kurmanji et al. 2023): a student leaves its teacher on the forget set and stays close on retain.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import (
    _augment,
    _distill_kl,
    _frozen,
    _Loop,
    _require_classes,
    _Rows,
    _update,
    batch_share,
)
from ml.methods.params import ScrubParams
from ml.methods.study import STAGE_1, STAGE_2
from ml.trainer import make_optimizer


def max_step_scale(params: ScrubParams, n_forget: int) -> float:
    """What the max-step loss is multiplied by: n_forget / forget_batch_size for a forget set smaller than one
    max-step batch when scale_max_steps is on, else 1."""
    return batch_share(n_forget, params.forget_batch_size) if params.scale_max_steps else 1.0


@register_method("scrub")
def scrub(model: nn.Module, data: UnlearnData, params: ScrubParams, run: Run) -> nn.Module:
    """A student leaves the original model (its teacher) on the forget set and stays close to it on retain.

    Source: Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning" (SCRUB). Each epoch begins, while
    epoch < max_epochs, with a max-step pass over the forget set (loss -KL(teacher || student)), then a
    min-step pass over the retain set (ce_weight CE + kl_weight KL); one SGD optimiser serves both, as in its
    code. (Its code runs max-steps while epoch <= msteps, one more than the paper's count; max_epochs is the
    paper's.)

    Ours: with scale_max_steps, a forget set smaller than a max-step batch climbs with its loss scaled by
    n_forget / forget_batch_size (max_step_scale()), as if its batch were filled with samples that add
    nothing: the max-step loss is a batch mean, so otherwise each sample of a 7-sample set is pushed 4 times
    as hard as one of a 29-sample set, and 7 samples of digits were over-forgotten (see ScrubParams).
    """
    _require_classes(data, "scrub")
    teacher = _frozen(model)
    augment = _augment(data, params)
    retain = _Rows(data, data.retain_ids, run, index=STAGE_1, augment=augment)
    forget = _Rows(data, data.forget_ids, run, index=STAGE_2, augment=augment)
    optimizer = make_optimizer(model, "sgd", params.lr, params.momentum, params.nesterov, params.weight_decay)
    max_epochs = min(params.max_epochs, params.epochs)
    steps = params.epochs * retain.batches(params.batch_size) + max_epochs * forget.batches(
        params.forget_batch_size
    )
    loop = _Loop(run, run.progress, "scrub", steps, params.epochs)
    temperature = params.temperature
    scale = max_step_scale(params, len(data.forget_ids))
    model.train()
    for epoch in range(1, params.epochs + 1):
        if epoch <= max_epochs:
            for x, _ in forget.epoch(params.forget_batch_size):
                loop.before()
                with torch.no_grad():
                    target = teacher(x)
                loss = -scale * _distill_kl(model(x), target, temperature)
                _update(optimizer, loss)
                loop.after(loss, len(x), epoch)
        for x, y in retain.epoch(params.batch_size):
            loop.before()
            with torch.no_grad():
                target = teacher(x)
            out = model(x)
            loss = params.ce_weight * F.cross_entropy(out, y) + params.kl_weight * _distill_kl(
                out, target, temperature
            )
            _update(optimizer, loss)
            loop.after(loss, len(x), epoch)
    return model
