"""What every unlearning method receives, the registry binding methods to METHOD_SPECS, and run()."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from ml.data.base import ArrayDataset
from ml.errors import Cancelled
from ml.methods.params import METHOD_SPECS, MethodSpec, method_spec
from ml.specs import ArchSpec, Recipe, Strict
from ml.trainer import Progress, ProgressEvent, StopFlag, derive_seed, resolve_device, seeded, select_ids


@dataclass
class UnlearnData:
    """The data set and the three disjoint parts of its training split a method sees."""

    dataset: ArrayDataset
    forget_ids: np.ndarray
    excluded_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Forgotten earlier by the parent model: never trained on, neither retain nor forget."""
    recipe: Recipe = field(default_factory=Recipe)
    """The model's own training recipe (what retrain uses)."""
    arch: ArchSpec = field(default_factory=ArchSpec)

    def __post_init__(self) -> None:
        self.forget_ids = select_ids(self.dataset, self.forget_ids)
        self.excluded_ids = select_ids(self.dataset, self.excluded_ids)
        if np.intersect1d(self.forget_ids, self.excluded_ids).size:
            raise ValueError("forget ids overlap ids the parent model already forgot")

    @cached_property
    def retain_ids(self) -> np.ndarray:
        """Every training id that is neither forgotten now nor excluded earlier, ascending."""
        keep = np.ones(self.dataset.n_train, dtype=bool)
        keep[self.forget_ids] = False
        keep[self.excluded_ids] = False
        return np.flatnonzero(keep)


@dataclass(frozen=True)
class Run:
    """Per-call settings a method passes on to the trainer: seed, device, progress and the stop flag; and
    `details`, where a method records what it decided while running (SSD's alpha after its guard, gradient
    ascent's scaled lr) for the unlearned model's metrics (`method_details`)."""

    seed: int
    device: torch.device
    progress: Progress | None = None
    should_stop: StopFlag | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise Cancelled when asked to stop (for loops that are not the trainer's)."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("stopped by request")

    def seed_for(self, stage: int) -> int:
        """Each stage draws from its own stream, so changing one stage's length never shifts another's."""
        return derive_seed(self.seed, stage)

    def stages(self, weights: Sequence[float]) -> list[Progress | None]:
        """One progress callback per stage, rescaling its 0..1 into the stage's share of the whole run."""
        if self.progress is None:
            return [None] * len(weights)
        total = float(sum(weights)) or 1.0
        starts = np.concatenate([[0.0], np.cumsum(weights)[:-1]]) / total
        return [_rescaled(self.progress, s, w / total) for s, w in zip(starts, weights, strict=True)]


def _rescaled(progress: Progress, start: float, width: float) -> Progress:
    def report(event: ProgressEvent) -> None:
        progress(replace(event, fraction=min(1.0, start + width * event.fraction)))

    return report


Method = Callable[[nn.Module, UnlearnData, Any, Run], nn.Module]


@dataclass(frozen=True)
class Registered:
    spec: MethodSpec
    fn: Method


METHODS: dict[str, Registered] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    """Bind a method function to its METHOD_SPECS entry (name, description, params model)."""

    def wrap(fn: Method) -> Method:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = Registered(method_spec(name), fn)
        return fn

    return wrap


def registered() -> dict[str, Registered]:
    """The registry with the built-in methods loaded."""
    from ml.methods import beyond, study  # noqa: F401  (register the built-in methods)

    missing = sorted(set(METHOD_SPECS) - set(METHODS))
    if missing:
        raise RuntimeError(f"methods without an implementation: {', '.join(missing)}")
    return METHODS


def parse_params(spec: MethodSpec, params: BaseModel | dict[str, Any] | None) -> Strict:
    """The method's typed params from a dict (validated) or its own params model; any other is a bug."""
    if isinstance(params, spec.params):
        return params
    if isinstance(params, BaseModel):
        raise TypeError(f"method {spec.name!r} takes {spec.params.__name__}, not {type(params).__name__}")
    return spec.params.model_validate(params or {})


def run(
    name: str,
    model: nn.Module,
    data: UnlearnData,
    params: BaseModel | dict[str, Any] | None,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    details: dict[str, Any] | None = None,
) -> nn.Module:
    """Run a method on a private copy of `model`, never the input; returns the new model on `device`.

    `details`, when given, receives what the method records about its run (Run.details).
    """
    spec = method_spec(name)
    fn = registered()[name].fn
    typed = parse_params(spec, params)
    dev = resolve_device(device)
    work = copy.deepcopy(model).to(dev)
    with seeded(seed, dev):
        out = fn(work, data, typed, Run(seed, dev, progress, should_stop, {} if details is None else details))
    return out.to(dev)
