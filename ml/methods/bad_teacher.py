"""Bad teaching (Chundawat et al. 2023): distil from the original model on retain, a random one on forget.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _augment, _frozen, _Loop, _require_classes, _Rows, _update, retain_sample
from ml.methods.params import BadTeacherParams
from ml.methods.study import DRAWS, STAGE_1, STAGE_2
from ml.models import build_model
from ml.trainer import make_optimizer, seeded


@register_method("bad_teacher")
def bad_teacher(model: nn.Module, data: UnlearnData, params: BadTeacherParams, run: Run) -> nn.Module:
    """Distil from the original model on retain samples and from a randomly initialised one on forget samples.

    Source: Chundawat et al. 2023, "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
    Incompetent Teacher". The student sees a random retain_fraction of the retain set and the whole forget
    set, shuffled together. Its loss is KL(teacher || student) summed over classes and averaged over the
    batch (their code averages over classes too, a factor 1 / C that Adam all but ignores).
    """
    _require_classes(data, "bad_teacher")
    dataset = data.dataset
    competent = _frozen(model)
    with seeded(run.seed_for(STAGE_2), run.device):
        incompetent = build_model(data.arch, dataset.num_classes, dataset.in_channels)
    incompetent = incompetent.to(run.device).eval().requires_grad_(False)
    rng = np.random.default_rng(run.seed_for(DRAWS))
    sample = retain_sample(data, params.retain_fraction, rng)
    ids = np.concatenate([sample, data.forget_ids])
    is_forget = np.concatenate([np.zeros(len(sample), np.int64), np.ones(len(data.forget_ids), np.int64)])
    rows = _Rows(data, ids, run, index=STAGE_1, augment=_augment(data, params), labels=is_forget)
    optimizer = make_optimizer(
        model, params.optimizer, params.lr, params.momentum, params.nesterov, params.weight_decay
    )
    loop = _Loop(
        run, run.progress, "bad_teacher", params.epochs * rows.batches(params.batch_size), params.epochs
    )
    temperature = params.temperature
    model.train()
    for epoch in range(1, params.epochs + 1):
        for x, flag in rows.epoch(params.batch_size):
            loop.before()
            with torch.no_grad():
                good = F.softmax(competent(x) / temperature, dim=1)
                bad = F.softmax(incompetent(x) / temperature, dim=1)
                target = torch.where(flag[:, None] == 1, bad, good)
            loss = F.kl_div(F.log_softmax(model(x) / temperature, dim=1), target, reduction="batchmean")
            _update(optimizer, loss)
            loop.after(loss, len(x), epoch)
    return model
