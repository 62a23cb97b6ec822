"""l1-sparse unlearning (Jia et al. 2023): fine-tune on retain with a decaying l1 penalty.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _fit, _gradient_hooks, _StepCounter
from ml.methods.params import L1SparseParams
from ml.methods.study import STAGE_1


@register_method("l1_sparse")
def l1_sparse(model: nn.Module, data: UnlearnData, params: L1SparseParams, run: Run) -> nn.Module:
    """Fine-tune on the retain set with gamma_e ||theta||_1 added to the loss, gamma_e = gamma (1 - e / epochs).

    Source: Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning" (l1-sparse MU, with its linearly
    decaying gamma). The penalty's gradient gamma_e sign(theta) is added to every parameter's, all of them
    penalised as in its code; epoch e is read from the trainer's step count.
    """
    with l1_penalty(model, params, steps_per_epoch=math.ceil(len(data.retain_ids) / params.batch_size)):
        _fit(
            model,
            data,
            data.retain_ids,
            params,
            run,
            epochs=params.epochs,
            lr=params.lr,
            stage="l1_sparse",
            index=STAGE_1,
            progress=run.progress,
        )
    return model


@contextmanager
def l1_penalty(model: nn.Module, params: L1SparseParams, *, steps_per_epoch: int) -> Iterator[None]:
    """l1-sparse's gradient while entered: gamma (1 - e / epochs) sign(theta) added to every parameter's.

    Epoch e is read from the training forward passes `model` has made since entry. A pack passes its wide
    network, whose one forward per step is every network's step.
    """
    counter = _StepCounter(model)

    def penalised(_name: str, p: nn.Parameter, grad: torch.Tensor) -> torch.Tensor:
        epoch = (counter.steps - 1) // steps_per_epoch
        return grad + params.gamma * (1 - epoch / params.epochs) * p.detach().sign()

    try:
        with _gradient_hooks(model, penalised):
            yield
    finally:
        counter.remove()
