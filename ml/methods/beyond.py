"""Unlearning methods beyond the study, one module each after its paper; params.py says where each default comes from.

Plain training is the shared trainer's fit(): gradient ascent, l1-sparse and SalUn change only what fit's
optimiser sees, through gradient hooks. The methods whose step needs two batches or two models (NegGrad+,
SCRUB, bad teacher) and SSD's gradient passes run their own short loop (ml/methods/loops.py). Importing this
module registers all nine and keeps every name importable from here.
"""

from __future__ import annotations

from ml.methods.bad_teacher import bad_teacher
from ml.methods.gradient_ascent import gradient_ascent
from ml.methods.l1_sparse import l1_penalty, l1_sparse
from ml.methods.loops import (
    _augment,
    _distill_kl,
    _fit,
    _frozen,
    _gradient_hooks,
    _Loop,
    _require_classes,
    _require_forget,
    _Rows,
    _StepCounter,
    _task_loss,
    _update,
    batch_gradients,
)
from ml.methods.neggrad_plus import neggrad_plus
from ml.methods.noise_reset import noise_reset, perturb
from ml.methods.random_label import random_label, wrong_labels
from ml.methods.salun import masked_decay, saliency_masks, salun
from ml.methods.scrub import scrub
from ml.methods.ssd import dampen, importances, ssd

__all__ = [
    "_Loop",
    "_Rows",
    "_StepCounter",
    "_augment",
    "_distill_kl",
    "_fit",
    "_frozen",
    "_gradient_hooks",
    "_require_classes",
    "_require_forget",
    "_task_loss",
    "_update",
    "bad_teacher",
    "batch_gradients",
    "dampen",
    "gradient_ascent",
    "importances",
    "l1_penalty",
    "l1_sparse",
    "masked_decay",
    "neggrad_plus",
    "noise_reset",
    "perturb",
    "random_label",
    "saliency_masks",
    "salun",
    "scrub",
    "ssd",
    "wrong_labels",
]
