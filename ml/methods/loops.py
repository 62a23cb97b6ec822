"""The pieces the methods share: a run's random streams and the trainer with a method's settings (the study's
methods and those beyond it), gradient hooks, and a short loop of their own (rows on the device, progress, stop
requests, divergence checks) for steps that need two batches or two models, in float32 on every device.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import Normalizer, build_augmenter
from ml.data.base import ArrayDataset
from ml.errors import Diverged
from ml.methods.base import Run, UnlearnData
from ml.methods.cost import _sample
from ml.methods.params import MethodParams, RepairParams
from ml.specs import AugmentSpec
from ml.trainer import (
    REPORT_SECONDS,
    Optimizer,
    Progress,
    ProgressEvent,
    TrainStats,
    _targets,
    fit,
    to_device,
)

# A run's random streams, one per use, so changing one stage's length never shifts another's draws.
STAGE_1, DRAWS, STAGE_2, REPAIR, REPAIR_DRAWS = range(5)


def _fit(
    model: nn.Module,
    data: UnlearnData,
    ids: np.ndarray,
    p: MethodParams,
    run: Run,
    *,
    epochs: int,
    lr: float,
    stage: str,
    index: int,
    progress: Progress | None,
    labels: np.ndarray | None = None,
    optimizer: Optimizer = "sgd",
    weight_decay: float | None = None,
    until: Callable[[], bool] | None = None,
) -> TrainStats:
    """The trainer with a method's optimiser settings; `index` gives the stage its own random stream.

    `optimizer` and `weight_decay` override the params' SGD and weight decay; `until`, asked after every
    epoch, ends training early when it returns True (selective pruning's overfitting copies).
    """
    return fit(
        model,
        data.dataset,
        ids,
        epochs=epochs,
        lr=lr,
        seed=run.seed_for(index),
        batch_size=p.batch_size,
        optimizer=optimizer,
        momentum=p.momentum,
        nesterov=p.nesterov,
        weight_decay=p.weight_decay if weight_decay is None else weight_decay,
        augment=_augment(data, p),
        device=run.device,
        progress=progress,
        should_stop=run.should_stop,
        labels=labels,
        stage=stage,
        until=until,
    )


def _augment(data: UnlearnData, p: MethodParams) -> AugmentSpec | None:
    """The model recipe's augmentation when the params ask for it, as fit() takes it."""
    return data.recipe.augment if p.augment else None


def retain_sample(data: UnlearnData, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A random share of the retain set, drawn without replacement, sorted: as many rows as cost() prices."""
    size = _sample(fraction, len(data.retain_ids))
    return np.sort(rng.choice(data.retain_ids, size=size, replace=False))


def repair_ids(data: UnlearnData, p: RepairParams, seed: int) -> np.ndarray:
    """The retain rows a repair trains on: all of them, or a random repair_share of them drawn from `seed`
    (the run's REPAIR_DRAWS stream), the same rows every repair epoch."""
    if p.repair_share >= 1.0 or not len(data.retain_ids):
        return data.retain_ids
    return retain_sample(data, p.repair_share, np.random.default_rng(seed))


def _require_forget(data: UnlearnData, method: str) -> None:
    """Refuse an empty forget set where a method's step or mask is undefined without one."""
    if not len(data.forget_ids):
        raise ValueError(f"{method} needs forget samples")


def _require_classes(data: UnlearnData, method: str) -> None:
    """Refuse regression data where a method distils class probabilities."""
    if data.dataset.task == "regression":
        raise ValueError(f"{method} compares class distributions and has no regression form")


GradientRewrite = Callable[[str, nn.Parameter, torch.Tensor], torch.Tensor]
"""A gradient hook's rewrite: (the parameter's name in the module, the parameter, its gradient) -> new gradient."""


def batch_share(n_forget: int, batch_size: int) -> float:
    """n_forget / batch_size for a forget set smaller than one batch, else 1: the share of a full batch's
    step that such a set climbs with (a batch-mean loss would push each of its few samples harder)."""
    return n_forget / batch_size if n_forget < batch_size else 1.0


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def _running_stats_kept(model: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm layers in training mode still normalise with the batch's own statistics but leave their
    running estimates (and batch count) as they are: for a forward on forget samples, which should not shape
    the statistics the unlearned model keeps."""
    norms = [m for m in model.modules() if isinstance(m, NORMS) and m.track_running_stats]
    for norm in norms:
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True


@contextmanager
def _gradient_hooks(model: nn.Module, rewrite: GradientRewrite) -> Iterator[None]:
    """Rewrite every trainable parameter's gradient as backward computes it, before the optimiser sees it.

    `model` is one network or a pack's wide one (ml/packed_net.py's PackedNet.net): an elementwise rewrite acts
    on every network's slice of a packed tensor as on that network's own tensor.
    """
    handles = [
        p.register_hook(lambda grad, name=name, p=p: rewrite(name, p, grad))
        for name, p in model.named_parameters()
        if p.requires_grad
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _StepCounter:
    """Counts the model's forward passes in training mode: inside fit(), the index of the current step."""

    def __init__(self, model: nn.Module) -> None:
        self.steps = 0
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, _: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            self.steps += 1

    def remove(self) -> None:
        self._handle.remove()


def _task_loss(
    out: torch.Tensor, y: torch.Tensor, dataset: ArrayDataset, reduction: Literal["mean", "none"] = "mean"
) -> torch.Tensor:
    """The trainer's loss: cross-entropy, or for regression the MSE of the first output; the batch mean, or
    with reduction "none" each sample's."""
    if dataset.task == "regression":
        return F.mse_loss(out.float().reshape(len(y), -1)[:, 0], y, reduction=reduction)
    return F.cross_entropy(out, y, reduction=reduction)


def _distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the tempered softmaxes, mean over the batch, times T^2 (Hinton et al.)."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2


def _frozen(model: nn.Module) -> nn.Module:
    """A copy of `model` as it is now, in eval mode and without gradients: a teacher."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class _Rows:
    """Training rows copied to the device once and served as normalised, optionally augmented batches; rows
    given weights say each served batch's in `taken_weights`."""

    def __init__(
        self,
        data: UnlearnData,
        ids: np.ndarray,
        run: Run,
        *,
        index: int,
        augment: AugmentSpec | None,
        labels: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> None:
        dataset = data.dataset
        self.x = to_device(torch.from_numpy(np.ascontiguousarray(dataset.train_x[ids])), run.device)
        self.y = to_device(_targets(dataset, ids, labels), run.device)
        self.weights = (
            None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=run.device)
        )
        self.taken_weights: torch.Tensor | None = None
        """With `weights` (one per row): those of the rows of the last batch served, in its order."""
        self.generator = torch.Generator(device=run.device)
        self.generator.manual_seed(run.seed_for(index))
        self.augmenter = build_augmenter(augment, self.generator)
        self.normalise = Normalizer(dataset.mean, dataset.std, run.device)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, size: int) -> int:
        """Batches in one pass."""
        return math.ceil(len(self) / size)

    def epoch(
        self, size: int, shuffle: bool = True, even: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in batches of `size` (the last one shorter), shuffled unless asked not to; `even` keeps
        the number of batches, ceil(n / size), but evens their sizes out (they differ by at most one)."""
        n = len(self)
        order = (
            torch.randperm(n, device=self.x.device, generator=self.generator)
            if shuffle
            else torch.arange(n, device=self.x.device)
        )
        k = math.ceil(n / size)
        bounds = [i * n // k for i in range(k + 1)] if even else [*range(0, n, size), n]
        for start, stop in itertools.pairwise(bounds):
            yield self._take(order[start:stop])

    def endless(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of min(size, n) forever, each pass freshly shuffled (a cycled loader without short batches)."""
        size = min(size, len(self))
        pending = torch.zeros(0, dtype=torch.long, device=self.x.device)
        while True:
            while len(pending) < size:
                fresh = torch.randperm(len(self), device=self.x.device, generator=self.generator)
                pending = torch.cat([pending, fresh])
            yield self._take(pending[:size])
            pending = pending[size:]

    def _take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(idx) == 1:
            # As in the trainer: batch norm cannot train on one sample with 1x1 feature maps; a repeated
            # sample keeps the mean loss and its gradient unchanged.
            idx = idx.repeat(2)
        x = self.x.index_select(0, idx)
        if self.weights is not None:
            self.taken_weights = self.weights.index_select(0, idx)
        if self.augmenter is not None:
            x = self.augmenter(x)
        return self.normalise(x), self.y.index_select(0, idx)


class _Loop:
    """Stop requests, divergence checks and progress events for a method's own loop, as fit() gives them."""

    def __init__(self, run: Run, progress: Progress | None, stage: str, steps: int, epochs: int) -> None:
        self.run = run
        self.progress = progress
        self.stage = stage
        self.steps = steps
        self.epochs = epochs
        self.step = 0
        self._loss = torch.zeros((), device=run.device)
        self._seen = 0
        self._reported = time.monotonic()

    def before(self) -> None:
        """Raise Cancelled when asked to stop."""
        self.run.check()

    def after(self, loss: torch.Tensor, n: int, epoch: int) -> None:
        """Count a finished step; about once a second and at the last, check the loss and report it."""
        self.step += 1
        self._loss += loss.detach() * n
        self._seen += n
        due = self.progress is not None and time.monotonic() - self._reported >= REPORT_SECONDS
        if self.step == self.steps or due:
            self._reported = time.monotonic()
            mean = self._loss.item() / self._seen
            if not math.isfinite(mean):
                raise Diverged(f"{self.stage}: loss became {mean} at epoch {epoch}")
            if self.progress is not None:
                self.progress(
                    ProgressEvent(
                        self.step / self.steps,
                        epoch,
                        self.epochs,
                        self.step,
                        self.steps,
                        mean,
                        None,
                        self.stage,
                    )
                )
            self._loss.zero_()
            self._seen = 0


Batch = tuple[torch.Tensor, torch.Tensor]


def _paired_steps(
    model: nn.Module,
    run: Run,
    progress: Progress | None,
    stage: str,
    optimizer: torch.optim.Optimizer,
    lead: _Rows,
    follow: _Rows,
    *,
    epochs: int,
    batch_size: int,
    step_loss: Callable[[Batch, Batch], torch.Tensor],
) -> None:
    """epochs passes over `lead` in batches, each paired with the next batch of `follow` (which cycles) in one
    optimiser step on step_loss(lead batch, follow batch): NegGrad+'s loop and noise_reset's climb, priced
    by cost._paired."""
    loop = _Loop(run, progress, stage, epochs * lead.batches(batch_size), epochs)
    follow_batches = follow.endless(batch_size)
    model.train()
    for epoch in range(1, epochs + 1):
        for x, y in lead.epoch(batch_size):
            other = next(follow_batches)
            loop.before()
            loss = step_loss((x, y), other)
            _update(optimizer, loss)
            loop.after(loss, len(y), epoch)


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`, as fit() takes it."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def batch_gradients(
    model: nn.Module,
    data: UnlearnData,
    ids: np.ndarray,
    batch_size: int,
    run: Run,
    *,
    progress: Progress | None,
    stage: str,
    even: bool = False,
) -> Iterator[list[torch.Tensor]]:
    """Gradients of each batch's mean loss over `ids`, in order, in eval mode (batch norm statistics kept);
    `even`: ceil(n / batch_size) batches of sizes that differ by at most one, no short last batch."""
    rows = _Rows(data, ids, run, index=STAGE_1, augment=None)
    params = [p for p in model.parameters() if p.requires_grad]
    loop = _Loop(run, progress, stage, rows.batches(batch_size), 1)
    was_training = model.training
    model.eval()
    try:
        for x, y in rows.epoch(batch_size, shuffle=False, even=even):
            loop.before()
            loss = _task_loss(model(x), y, data.dataset)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            yield [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            loop.after(loss, len(y), 1)
    finally:
        model.train(was_training)
