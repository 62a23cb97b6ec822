"""What a method's run costs next to retraining from scratch, so methods are compared at equal compute.

The unit is the sample-pass: one sample through one forward and one backward pass. A forward pass alone
(a teacher's output, an accuracy check, activation statistics) counts FORWARD = 1/3 of one, since the
backward pass costs about twice the forward. cost() is the method's sample-passes over a retrain's,
recipe.epochs x n_retain with the model's own recipe. With n_r retain and n_f forget samples and B the
batch size, a method makes:

    none              0
    retrain           recipe.epochs x n_r (its own recipe; 1.0 with the model's)
    finetune          epochs x n_r
    poison            epochs x n_f
    poison_full       epochs x (n_r + n_f)
    hybrid            poison_epochs x n_f + epochs x n_r
    prune, prune_last_layer
                      overfit_epochs x n_f + (overfit_epochs - 1) x n_f x FORWARD (accuracy checks)
                      + epochs x n_r
    prune_complex     the same for the forget copy and for its retain sample s (retain_fraction x n_r)
                      + epochs x n_r
    activation_reset  (n_f + min(n_f, n_r)) x FORWARD + epochs x n_r
    gradient_ascent   epochs x n_f
    neggrad_plus      epochs x (n_r + ceil(n_r / B) x min(B, n_f)): every retain batch comes with a forget batch
    random_label      epochs x (n_r + n_f)
    l1_sparse         epochs x n_r
    salun             n_f (the saliency gradients) + epochs x (n_r + n_f)
    scrub             epochs x n_r x (1 + FORWARD) + min(max_epochs, epochs) x n_f x (1 + FORWARD)
    ssd               n_f + full_fraction x (n_r + n_f) (one gradient pass over each; no training)
                      + 2 x min(retain_check, n_r) x FORWARD (its guard's accuracy checks, before and
                      after; each back-off, rare, adds one more)
    bad_teacher       epochs x (s + n_f) x (1 + 2 FORWARD), s = retain_fraction x n_r (two teachers)
    noise_reset       forget_epochs x (n_f + ceil(n_f / B) x min(B, n_r)) + epochs x n_r: each forget batch of
                      the climb comes with a retain batch; weighted by rank, n_f x FORWARD more (the margins)

In the repairing methods (hybrid, the prune family, activation_reset, noise_reset) "epochs x n_r" is their
repair, which runs over repair_share x n_r rows when that is below 1.

Early stopping (the prune family's overfit_target) only ever ends a stage sooner, so its figure is an upper
bound. Work that does not scale with the data (copying or building models, masks on weights) is free here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from ml.methods.params import method_spec
from ml.specs import Recipe

FORWARD = 1 / 3
"""A forward pass alone, in sample-passes."""


@dataclass(frozen=True)
class Workload:
    """The sizes a cost depends on, for callers that have counts but no data set loaded."""

    n_retain: int
    n_forget: int
    recipe: Recipe


class _Split(Protocol):
    """What cost() reads from an UnlearnData (kept structural so this module stays torch-free)."""

    @property
    def retain_ids(self) -> Sized: ...

    @property
    def forget_ids(self) -> Sized: ...

    @property
    def recipe(self) -> Recipe: ...


def workload(data: Workload | _Split) -> Workload:
    """The counts and recipe of an UnlearnData, or the Workload itself."""
    if isinstance(data, Workload):
        return data
    return Workload(len(data.retain_ids), len(data.forget_ids), data.recipe)


def _sample(fraction: float, n: int) -> int:
    """Size of a method's random share of n samples, as the methods draw it."""
    return min(n, max(1, round(fraction * n))) if n else 0


def _overfit(p: Any, n: int) -> float:
    """An overfit copy's training with its accuracy check after every epoch but the last."""
    return p.overfit_epochs * n + (p.overfit_epochs - 1) * n * FORWARD


def repair_passes(p: Any, n_retain: int) -> int:
    """A repair's work: epochs over its repair_share of the retain set (ml.methods.loops.repair_ids)."""
    return p.epochs * _sample(p.repair_share, n_retain)


def _paired(n: int, other: int, batch_size: int) -> int:
    """One pass over n rows in batches, each batch paired with a batch of min(batch_size, other) rows from a
    cycling second set (NegGrad+'s retain pass, noise_reset's climb)."""
    return n + math.ceil(n / batch_size) * min(batch_size, other)


_Rule = Callable[[Any, Workload], float]

_RULES: dict[str, _Rule] = {
    "none": lambda p, w: 0.0,
    "retrain": lambda p, w: (p.recipe or w.recipe).epochs * w.n_retain,
    "finetune": lambda p, w: p.epochs * w.n_retain,
    "poison": lambda p, w: p.epochs * w.n_forget,
    "poison_full": lambda p, w: p.epochs * (w.n_retain + w.n_forget),
    "hybrid": lambda p, w: p.poison_epochs * w.n_forget + repair_passes(p, w.n_retain),
    "prune": lambda p, w: _overfit(p, w.n_forget) + repair_passes(p, w.n_retain),
    "prune_last_layer": lambda p, w: _overfit(p, w.n_forget) + repair_passes(p, w.n_retain),
    "prune_complex": lambda p, w: (
        _overfit(p, w.n_forget)
        + _overfit(p, _sample(p.retain_fraction, w.n_retain))
        + repair_passes(p, w.n_retain)
    ),
    "activation_reset": lambda p, w: (
        (w.n_forget + min(w.n_forget, w.n_retain)) * FORWARD + repair_passes(p, w.n_retain)
    ),
    "gradient_ascent": lambda p, w: p.epochs * w.n_forget,
    "neggrad_plus": lambda p, w: p.epochs * _paired(w.n_retain, w.n_forget, p.batch_size),
    "random_label": lambda p, w: p.epochs * (w.n_retain + w.n_forget),
    "l1_sparse": lambda p, w: p.epochs * w.n_retain,
    "salun": lambda p, w: w.n_forget + p.epochs * (w.n_retain + w.n_forget),
    "scrub": lambda p, w: (1 + FORWARD) * (p.epochs * w.n_retain + min(p.max_epochs, p.epochs) * w.n_forget),
    "ssd": lambda p, w: (
        w.n_forget
        + _sample(p.full_fraction, w.n_retain + w.n_forget)
        + (0 if p.max_retain_drop is None else 2 * min(p.retain_check, w.n_retain) * FORWARD)
    ),
    "bad_teacher": lambda p, w: (
        p.epochs * (_sample(p.retain_fraction, w.n_retain) + w.n_forget) * (1 + 2 * FORWARD)
    ),
    "noise_reset": lambda p, w: (
        p.forget_epochs * _paired(w.n_forget, w.n_retain, p.batch_size)
        + (w.n_forget * FORWARD if p.forget_epochs and p.forget_weighting == "rank" else 0)
        + repair_passes(p, w.n_retain)
    ),
}


def sample_passes(name: str, params: BaseModel | dict[str, Any] | None, data: Workload | _Split) -> float:
    """A method's work in sample-passes (the module docstring gives each method's rule)."""
    spec = method_spec(name)
    if isinstance(params, BaseModel) and not isinstance(params, spec.params):
        raise TypeError(f"method {name!r} takes {spec.params.__name__}, not {type(params).__name__}")
    typed = params if isinstance(params, spec.params) else spec.params.model_validate(params or {})
    return float(_RULES[name](typed, workload(data)))


def cost(name: str, params: BaseModel | dict[str, Any] | None, data: Workload | _Split) -> float:
    """A method's sample-passes over a retrain's (recipe.epochs x n_retain): 1.0 costs as much as retraining."""
    w = workload(data)
    if w.n_retain == 0:
        raise ValueError("a retrain on an empty retain set costs nothing, so no cost is relative to it")
    return sample_passes(name, params, w) / (w.recipe.epochs * w.n_retain)
