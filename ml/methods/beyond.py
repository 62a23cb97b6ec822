"""Unlearning methods beyond the study, each after its paper; params.py says where each default comes from.

Plain training is the shared trainer's fit(): gradient ascent, l1-sparse and SalUn change only what fit's
optimiser sees, through gradient hooks. The methods whose step needs two batches or two models (NegGrad+,
SCRUB, bad teacher) and SSD's gradient passes run their own short loop on the trainer's parts (optimiser,
normalisation, augmentation, progress events, stop requests, divergence checks), in float32 on every device.

Each function receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import Normalizer, build_augmenter
from ml.data.base import ArrayDataset
from ml.errors import Diverged
from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.params import (
    BadTeacherParams,
    GradientAscentParams,
    L1SparseParams,
    MethodParams,
    NegGradPlusParams,
    NoiseResetParams,
    RandomLabelParams,
    SalUnParams,
    ScrubParams,
    SSDParams,
)
from ml.methods.study import DRAWS, REPAIR, STAGE_1, STAGE_2, compared, random_labels, reinit_where
from ml.models import build_model
from ml.specs import AugmentSpec
from ml.trainer import (
    REPORT_SECONDS,
    Optimizer,
    Progress,
    ProgressEvent,
    TrainStats,
    _targets,
    fit,
    make_optimizer,
    seeded,
    to_device,
)


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
) -> TrainStats:
    """The trainer with a method's optimiser settings (study.py's, plus Adam and a weight-decay override)."""
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
    )


def _augment(data: UnlearnData, p: MethodParams) -> AugmentSpec | None:
    """The model recipe's augmentation when the params ask for it, as fit() takes it."""
    return data.recipe.augment if p.augment else None


def _require_forget(data: UnlearnData, method: str) -> None:
    """Refuse an empty forget set where a method's step or mask is undefined without one."""
    if not len(data.forget_ids):
        raise ValueError(f"{method} needs forget samples")


def _require_classes(data: UnlearnData, method: str) -> None:
    """Refuse regression data where a method distils class probabilities."""
    if data.dataset.task == "regression":
        raise ValueError(f"{method} compares class distributions and has no regression form")


@contextmanager
def _gradient_hooks(
    model: nn.Module, rewrite: Callable[[nn.Parameter, torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Rewrite every parameter's gradient as backward computes it, before the trainer's optimiser sees it."""
    handles = [
        p.register_hook(lambda grad, p=p: rewrite(p, grad)) for p in model.parameters() if p.requires_grad
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


def _task_loss(out: torch.Tensor, y: torch.Tensor, dataset: ArrayDataset) -> torch.Tensor:
    """The trainer's loss: cross-entropy, or for regression the MSE of the first output."""
    if dataset.task == "regression":
        return F.mse_loss(out.float().reshape(len(y), -1)[:, 0], y)
    return F.cross_entropy(out, y)


def _distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the tempered softmaxes, mean over the batch, times T^2 (Hinton et al.)."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2


def _frozen(model: nn.Module) -> nn.Module:
    """A copy of `model` as it is now, in eval mode and without gradients: a teacher."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class _Rows:
    """Training rows copied to the device once and served as normalised, optionally augmented batches."""

    def __init__(
        self,
        data: UnlearnData,
        ids: np.ndarray,
        run: Run,
        *,
        index: int,
        augment: AugmentSpec | None,
        labels: np.ndarray | None = None,
    ) -> None:
        dataset = data.dataset
        self.x = to_device(torch.from_numpy(np.ascontiguousarray(dataset.train_x[ids])), run.device)
        self.y = to_device(_targets(dataset, ids, labels), run.device)
        self.generator = torch.Generator(device=run.device)
        self.generator.manual_seed(run.seed_for(index))
        self.augmenter = build_augmenter(augment, self.generator)
        self.normalise = Normalizer(dataset.mean, dataset.std, run.device)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, size: int) -> int:
        """Batches in one pass."""
        return math.ceil(len(self) / size)

    def epoch(self, size: int, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in batches of `size` (the last one shorter), shuffled unless asked not to."""
        n = len(self)
        order = (
            torch.randperm(n, device=self.x.device, generator=self.generator)
            if shuffle
            else torch.arange(n, device=self.x.device)
        )
        for start in range(0, n, size):
            yield self._take(order[start : start + size])

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
) -> Iterator[list[torch.Tensor]]:
    """Gradients of each batch's mean loss over `ids`, in order, in eval mode (batch norm statistics kept)."""
    rows = _Rows(data, ids, run, index=STAGE_1, augment=None)
    params = [p for p in model.parameters() if p.requires_grad]
    loop = _Loop(run, progress, stage, rows.batches(batch_size), 1)
    was_training = model.training
    model.eval()
    try:
        for x, y in rows.epoch(batch_size, shuffle=False):
            loop.before()
            loss = _task_loss(model(x), y, data.dataset)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            yield [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            loop.after(loss, len(y), 1)
    finally:
        model.train(was_training)


@register_method("gradient_ascent")
def gradient_ascent(model: nn.Module, data: UnlearnData, params: GradientAscentParams, run: Run) -> nn.Module:
    """Climb the loss on the forget set: the trainer's steps with every loss gradient negated.

    Source: the GA baseline of Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning" (Thudi et al.
    2022 before it). Weight decay is the optimiser's, so it still pulls weights towards zero, as there.
    """
    with _gradient_hooks(model, lambda _, grad: -grad):
        _fit(
            model,
            data,
            data.forget_ids,
            params,
            run,
            epochs=params.epochs,
            lr=params.lr,
            stage="ascent",
            index=STAGE_1,
            progress=run.progress,
        )
    return model


@register_method("neggrad_plus")
def neggrad_plus(model: nn.Module, data: UnlearnData, params: NegGradPlusParams, run: Run) -> nn.Module:
    """Descend the retain loss and climb the forget loss in one step: alpha L_retain - (1 - alpha) L_forget.

    Source: Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning" (NegGrad+). An epoch is one pass over
    the retain set; each retain batch is paired with the next forget batch, the forget set cycling.
    """
    _require_forget(data, "neggrad_plus")
    dataset = data.dataset
    retain = _Rows(data, data.retain_ids, run, index=STAGE_1, augment=_augment(data, params))
    forget = _Rows(data, data.forget_ids, run, index=STAGE_2, augment=_augment(data, params))
    optimizer = make_optimizer(model, "sgd", params.lr, params.momentum, params.nesterov, params.weight_decay)
    loop = _Loop(
        run, run.progress, "neggrad_plus", params.epochs * retain.batches(params.batch_size), params.epochs
    )
    forget_batches = forget.endless(params.batch_size)
    model.train()
    for epoch in range(1, params.epochs + 1):
        for x_r, y_r in retain.epoch(params.batch_size):
            x_f, y_f = next(forget_batches)
            loop.before()
            retain_loss = _task_loss(model(x_r), y_r, dataset)
            forget_loss = _task_loss(model(x_f), y_f, dataset)
            loss = params.alpha * retain_loss - (1 - params.alpha) * forget_loss
            _update(optimizer, loss)
            loop.after(loss, len(y_r), epoch)
    return model


def wrong_labels(dataset: ArrayDataset, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A class other than each sample's own, uniformly (Graves et al.); regression: random_labels."""
    if dataset.task == "regression":
        return random_labels(dataset, len(ids), rng)
    shift = rng.integers(1, dataset.num_classes, len(ids))
    return (dataset.train_y[ids] + shift) % dataset.num_classes


@register_method("random_label")
def random_label(model: nn.Module, data: UnlearnData, params: RandomLabelParams, run: Run) -> nn.Module:
    """Train on the retain set mixed with the forget set relabelled with wrong classes.

    Source: Graves et al. 2021, "Amnesiac Machine Learning"; the defaults are those its baseline ran with in
    Chundawat et al. 2023 and Foster et al. 2024 (Adam, lr 1e-4, 3 epochs). The labels are drawn once.
    """
    dataset = data.dataset
    noise = wrong_labels(dataset, data.forget_ids, np.random.default_rng(run.seed_for(DRAWS)))
    _fit(
        model,
        data,
        np.concatenate([data.retain_ids, data.forget_ids]),
        params,
        run,
        epochs=params.epochs,
        lr=params.lr,
        stage="random_label",
        index=STAGE_1,
        progress=run.progress,
        labels=np.concatenate([dataset.train_y[data.retain_ids], noise]),
        optimizer=params.optimizer,
    )
    return model


@register_method("l1_sparse")
def l1_sparse(model: nn.Module, data: UnlearnData, params: L1SparseParams, run: Run) -> nn.Module:
    """Fine-tune on the retain set with gamma_e ||theta||_1 added to the loss, gamma_e = gamma (1 - e / epochs).

    Source: Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning" (l1-sparse MU, with its linearly
    decaying gamma). The penalty's gradient gamma_e sign(theta) is added to every parameter's, all of them
    penalised as in its code; epoch e is read from the trainer's step count.
    """
    steps_per_epoch = math.ceil(len(data.retain_ids) / params.batch_size)
    counter = _StepCounter(model)

    def penalised(p: nn.Parameter, grad: torch.Tensor) -> torch.Tensor:
        epoch = (counter.steps - 1) // steps_per_epoch
        return grad + params.gamma * (1 - epoch / params.epochs) * p.detach().sign()

    try:
        with _gradient_hooks(model, penalised):
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
    finally:
        counter.remove()
    return model


def saliency_masks(
    model: nn.Module, data: UnlearnData, sparsity: float, batch_size: int, run: Run, progress: Progress | None
) -> dict[nn.Parameter, torch.Tensor]:
    """SalUn's mask: the `sparsity` share of all weights with the largest |gradient| of the forget loss.

    The gradient is summed over batches of the forget set in eval mode, as SalUn's generate_mask.py does;
    the ranking is global over every parameter tensor, ties broken by position.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for grads in batch_gradients(
        model, data, data.forget_ids, batch_size, run, progress=progress, stage="saliency"
    ):
        for acc, grad in zip(total, grads, strict=True):
            acc.add_(grad)
    flat = torch.cat([acc.abs().flatten() for acc in total])
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    k = round(sparsity * flat.numel())
    if k:
        keep[torch.topk(flat, k, sorted=False).indices] = True
    return {
        p: mask.view_as(p) for p, mask in zip(params, keep.split([p.numel() for p in params]), strict=True)
    }


@register_method("salun")
def salun(model: nn.Module, data: UnlearnData, params: SalUnParams, run: Run) -> nn.Module:
    """Random labels on the forget set, mixed with retain, updating only the weights salient to forgetting.

    Source: Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency"
    (random-label SalUn, uniformly random labels drawn once, retain and forget shuffled together). Weights
    outside the mask never move: the optimiser runs without weight decay and the gradient hook adds it,
    masked (SGD adds weight_decay x theta to the gradient before momentum; so does the hook).
    """
    _require_forget(data, "salun")
    dataset = data.dataset
    n_forget, n_retain = len(data.forget_ids), len(data.retain_ids)
    first, second = run.stages([n_forget, params.epochs * (n_retain + n_forget)])
    masks = saliency_masks(model, data, params.sparsity, params.batch_size, run, first)
    noise = random_labels(dataset, n_forget, np.random.default_rng(run.seed_for(DRAWS)))
    decay = params.weight_decay
    with _gradient_hooks(model, lambda p, grad: masks[p] * (grad + decay * p.detach())):
        _fit(
            model,
            data,
            np.concatenate([data.retain_ids, data.forget_ids]),
            params,
            run,
            epochs=params.epochs,
            lr=params.lr,
            stage="salun",
            index=STAGE_1,
            progress=second,
            labels=np.concatenate([dataset.train_y[data.retain_ids], noise]),
            weight_decay=0.0,
        )
    return model


@register_method("scrub")
def scrub(model: nn.Module, data: UnlearnData, params: ScrubParams, run: Run) -> nn.Module:
    """A student leaves the original model (its teacher) on the forget set and stays close to it on retain.

    Source: Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning" (SCRUB). Each epoch begins, while
    epoch < max_epochs, with a max-step pass over the forget set (loss -KL(teacher || student)), then a
    min-step pass over the retain set (ce_weight CE + kl_weight KL); one SGD optimiser serves both, as in its
    code. (Its code runs max-steps while epoch <= msteps, one more than the paper's count; max_epochs is the
    paper's.)
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
    model.train()
    for epoch in range(1, params.epochs + 1):
        if epoch <= max_epochs:
            for x, _ in forget.epoch(params.forget_batch_size):
                loop.before()
                with torch.no_grad():
                    target = teacher(x)
                loss = -_distill_kl(model(x), target, temperature)
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


def importances(
    model: nn.Module,
    data: UnlearnData,
    ids: np.ndarray,
    batch_size: int,
    run: Run,
    *,
    progress: Progress | None,
    stage: str,
) -> list[torch.Tensor]:
    """SSD's importances: each parameter's squared batch-loss gradient, averaged over the batches of `ids`.

    A diagonal empirical Fisher estimate per batch rather than per sample, as SSD's calc_importance computes it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    n = 0
    for grads in batch_gradients(model, data, ids, batch_size, run, progress=progress, stage=stage):
        for acc, grad in zip(total, grads, strict=True):
            acc.add_(grad.square())
        n += 1
    return [acc / max(n, 1) for acc in total]


@torch.no_grad()
def dampen(
    params: list[nn.Parameter],
    full: list[torch.Tensor],
    forget: list[torch.Tensor],
    alpha: float,
    dampening: float,
) -> None:
    """Where forget > alpha x full, scale the weight by min(dampening x full / forget, 1); in place."""
    for p, imp_full, imp_forget in zip(params, full, forget, strict=True):
        selected = imp_forget > alpha * imp_full
        factor = (dampening * imp_full / imp_forget).clamp(max=1.0)
        p.copy_(torch.where(selected, p * factor, p))


@register_method("ssd")
def ssd(model: nn.Module, data: UnlearnData, params: SSDParams, run: Run) -> nn.Module:
    """Shrink the weights far more important to the forget set than to the whole training set; no training.

    Source: Foster et al. 2024, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
    Dampening". Importances as its code computes them (batches in order, eval mode, every parameter); the
    global ones come from retain + forget, or a random full_fraction share of it.
    """
    full = np.concatenate([data.retain_ids, data.forget_ids])
    if params.full_fraction < 1 and len(full):
        rng = np.random.default_rng(run.seed_for(DRAWS))
        size = min(len(full), max(1, round(params.full_fraction * len(full))))
        full = np.sort(rng.choice(full, size=size, replace=False))
    first, second = run.stages([len(data.forget_ids), len(full)])
    forget_imp = importances(
        model, data, data.forget_ids, params.batch_size, run, progress=first, stage="importance_forget"
    )
    full_imp = importances(
        model, data, full, params.batch_size, run, progress=second, stage="importance_full"
    )
    dampen(
        [p for p in model.parameters() if p.requires_grad],
        full_imp,
        forget_imp,
        params.alpha,
        params.dampening,
    )
    return model


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
    n_retain = len(data.retain_ids)
    size = min(n_retain, max(1, round(params.retain_fraction * n_retain)))
    sample = np.sort(rng.choice(data.retain_ids, size=size, replace=False))
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


@torch.no_grad()
def perturb(weight: torch.Tensor, params: NoiseResetParams, generator: torch.Generator) -> None:
    """Perturb exactly round(fraction x n) entries of `weight`, drawn at random, in place."""
    flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    k = round(params.fraction * weight.numel())
    flat[torch.randperm(weight.numel(), generator=generator, device=weight.device)[:k]] = True
    mask = flat.view_as(weight)
    if params.mode == "reset":
        reinit_where(weight, mask)
    else:
        noise = torch.randn(weight.shape, generator=generator, device=weight.device, dtype=weight.dtype)
        weight.add_(torch.where(mask, noise * params.noise_scale * weight.std(), 0.0))


@register_method("noise_reset")
def noise_reset(model: nn.Module, data: UnlearnData, params: NoiseResetParams, run: Run) -> nn.Module:
    """Perturb a random share of every weight tensor (fresh values or Gaussian noise), then fine-tune on retain.

    Source: the pattern shared by top entries of the NeurIPS 2023 Machine Unlearning challenge (Triantafillou
    et al. 2024, "Are we making progress in unlearning?"): damage the weights, then repair with a short
    fine-tune on the retain set. Weight tensors of rank >= 2 (convolutions, linear layers) are perturbed.
    """
    generator = torch.Generator(device=run.device)
    generator.manual_seed(run.seed_for(DRAWS))
    for weight in compared(model, last_layer_only=False).values():
        perturb(weight, params, generator)
    _fit(
        model,
        data,
        data.retain_ids,
        params,
        run,
        epochs=params.epochs,
        lr=params.lr,
        stage="retain",
        index=REPAIR,
        progress=run.progress,
    )
    return model
