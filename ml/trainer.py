"""The one training loop behind retrain and every unlearning method: seeded, cancellable, fast on GPUs.

Data is copied to the device once as uint8 (on CUDA through pinned memory, asynchronously) and batches are
gathered, augmented and normalised there, so a GPU never waits on host-side loading. On CUDA the forward
pass runs under bf16 autocast with channels_last and cudnn.benchmark, and the loop never synchronises with
the host between progress reports: loss and correct counts accumulate on the device and are read only when
a report is due.

torch.compile is optional (`compile_model`, or compile_by_default for every fit call in a block, which is
how the worker applies LETHE_TORCH_COMPILE): the compiled wrapper shares the model's parameters, so the
caller's model receives the trained weights with its own state_dict keys. On CUDA inductor compiles in
CUDA_COMPILE_MODE, which replays each step's kernels as CUDA graphs. A compile that fails (no C++
toolchain, unknown backend) is logged and the run trains eagerly instead.

Regression data sets train with the mean squared error on targets divided by the data set's target_scale;
their progress events carry accuracy None.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import Normalizer, build_augmenter
from ml.data.base import ArrayDataset
from ml.errors import Cancelled, Diverged
from ml.specs import AugmentSpec, Recipe

REPORT_SECONDS = 1.0
"""Seconds between progress reports: each report is one host-device synchronisation, so reports go by the
clock (a job page moves about once a second however slow a step is) rather than every so many steps."""

log = logging.getLogger(__name__)

CUDA_COMPILE_MODE = "reduce-overhead"
"""torch.compile's mode for inductor on CUDA: CUDA graphs, one launch per captured graph instead of one per
kernel. A CIFAR ResNet-18 step at batch 128 is launch-bound: on an H200 (benchmarks/gpu_check.py, bf16 +
channels_last) eager trained 11,800 images/s, inductor's default mode 12,600 and this mode 30,500; at batch
512, 54,100, 42,300 and 73,300."""

Schedule = Literal["none", "multistep", "cosine", "onecycle"]
Optimizer = Literal["sgd", "adam"]


@dataclass(frozen=True)
class ProgressEvent:
    """Where a train call (or a method's stage of one) stands; step/steps count over the whole call."""

    fraction: float
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    accuracy: float | None
    stage: str


Progress = Callable[[ProgressEvent], None]
StopFlag = Callable[[], bool]
Backend = str | Callable[..., object]
"""A torch.compile backend: a registered name ("inductor", "eager", ...) or a backend function."""


@dataclass(frozen=True)
class CompileDefault:
    """Whether fit calls that leave compile_model unset train under torch.compile, and with which backend."""

    enabled: bool = False
    backend: Backend = "inductor"


_EAGER = CompileDefault()
_compile_default: ContextVar[CompileDefault] = ContextVar("compile_default", default=_EAGER)


def compile_default() -> CompileDefault:
    """What fit does here when its caller leaves compile_model unset (see compile_by_default)."""
    return _compile_default.get()


@contextmanager
def compile_by_default(enabled: bool = True, backend: Backend = "inductor") -> Iterator[None]:
    """Within the block, fit (and so train and every method) compiles unless its caller says otherwise.

    Compilation costs seconds to minutes once per model shape and process, then speeds every step; it pays
    off for long runs and for many identical ones (reference sets), which reuse the compiled code.
    """
    token = _compile_default.set(CompileDefault(enabled, backend))
    try:
        yield
    finally:
        _compile_default.reset(token)


@dataclass(frozen=True)
class TrainStats:
    """What a train call did, for logs and benchmarks; loss/accuracy are the last epoch's running means."""

    epochs: int
    steps: int
    samples: int
    seconds: float
    loss: float
    accuracy: float | None
    compiled: bool = False
    """Whether training ran under torch.compile (False when it was off or fell back to eager)."""

    @property
    def images_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def resolve_device(device: str | torch.device) -> torch.device:
    """A concrete device (cuda -> cuda:N) so generators and RNG forks address the right chip."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextmanager
def seeded(seed: int, device: str | torch.device) -> Iterator[None]:
    """Seed torch's global generators for a block and restore the caller's state after it."""
    dev = resolve_device(device)
    cuda = [dev.index] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(dev):
                torch.cuda.manual_seed(seed)
        yield


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to CUDA through pinned memory, copied without blocking the host.

    The copy is queued on the current stream, so kernels that read the result later wait for it, and the
    pinned buffer is not reused before the copy is done (torch's pinned-memory allocator tracks that).
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def derive_seed(seed: int, *keys: int) -> int:
    """An independent seed for a sub-task, so stages of one run never share random streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] >> 1)


def lr_factor(
    schedule: Schedule, step: int, steps_per_epoch: int, total: int, milestones: Sequence[int], gamma: float
) -> float:
    """Multiplier of the base learning rate after `step` optimiser steps (onecycle is torch's own)."""
    if schedule == "multistep":
        epoch = step // steps_per_epoch
        return gamma ** sum(1 for m in milestones if m <= epoch)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    return 1.0


def make_optimizer(
    model: nn.Module, kind: Optimizer, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.Optimizer:
    """SGD (Nesterov only where there is momentum, which torch requires) or Adam with L2 weight decay."""
    params = list(model.parameters())
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, weight_decay=weight_decay
        )
    raise ValueError(f"unknown optimizer {kind!r}; valid: sgd, adam")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    lr: float,
    steps_per_epoch: int,
    total: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimiser step (multistep still changes the rate at epoch boundaries)."""
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total, 2))
    if schedule not in ("none", "multistep", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; valid: none, multistep, cosine, onecycle")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(schedule, s, steps_per_epoch, total, milestones, gamma)
    )


def select_ids(dataset: ArrayDataset, ids: np.ndarray | None) -> np.ndarray:
    """Validated training-split row ids (None = every row)."""
    if ids is None:
        return np.arange(dataset.n_train, dtype=np.int64)
    out = np.asarray(ids)
    if out.ndim != 1 or (out.size and not np.issubdtype(out.dtype, np.integer)):
        raise ValueError("ids must be a 1-D array of integer sample ids")
    out = out.astype(np.int64, copy=False)
    if out.size and (out.min() < 0 or out.max() >= dataset.n_train):
        raise ValueError(f"sample ids must lie in [0, {dataset.n_train})")
    return out


def _targets(dataset: ArrayDataset, ids: np.ndarray, labels: np.ndarray | None) -> torch.Tensor:
    """Training targets: class indices, or regression targets divided by target_scale."""
    y = dataset.train_y[ids] if labels is None else np.asarray(labels)
    if y.shape != (len(ids),):
        raise ValueError(f"labels must have one entry per id: expected shape ({len(ids)},), got {y.shape}")
    if dataset.task == "regression":
        return torch.from_numpy((y.astype(np.float32) / np.float32(dataset.target_scale)).astype(np.float32))
    return torch.from_numpy(y.astype(np.int64))


def fit(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 128,
    optimizer: Optimizer = "sgd",
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    schedule: Schedule = "none",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    augment: AugmentSpec | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    labels: np.ndarray | None = None,
    stage: str = "train",
    until: Callable[[], bool] | None = None,
    report_every: int | None = None,
    report_seconds: float = REPORT_SECONDS,
    fast: bool | None = None,
    compile_model: bool | None = None,
    compile_backend: Backend | None = None,
) -> TrainStats:
    """Train `model` in place (moved to `device`) on training rows `ids`, optimiser settings given directly.

    `labels` overrides the targets (one per id; poisoning). `until` is asked after every epoch and ends
    training early when it returns True. should_stop is asked before every step; True raises Cancelled.
    `fast` (default: on CUDA only) trains under bf16 autocast with channels_last weights and inputs.
    `compile_model` trains through torch.compile(model, backend=compile_backend); unset, both come from
    compile_by_default (off outside such a block). A compile error falls back to eager with a warning.
    Progress is reported at each epoch's end and every `report_seconds` in between (or, with
    `report_every`, every that many steps instead).
    """
    rows = select_ids(dataset, ids)
    targets = _targets(dataset, rows, labels)
    dev = resolve_device(device)
    n = len(rows)
    if n == 0 or epochs <= 0:
        return TrainStats(0, 0, 0, 0.0, float("nan"), None)
    cuda = dev.type == "cuda"
    fast = cuda if fast is None else fast
    default = compile_default()
    compile_model = default.enabled if compile_model is None else compile_model
    backend = default.backend if compile_backend is None else compile_backend
    regression = dataset.task == "regression"
    x = to_device(torch.from_numpy(np.ascontiguousarray(dataset.train_x[rows])), dev)
    y = to_device(targets, dev)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    model.to(dev)
    layout = fast and channels_last_helps(dataset)
    if layout:
        model.to(memory_format=torch.channels_last)
    net = _compiled(model, backend, compile_mode(backend, dev), stage) if compile_model else model
    opt = make_optimizer(model, optimizer, lr, momentum, nesterov, weight_decay)
    sched = make_scheduler(opt, schedule, lr, steps_per_epoch, total, milestones, gamma)
    generator = torch.Generator(device=dev)
    generator.manual_seed(seed)
    augmenter = build_augmenter(augment, generator)
    normalise = Normalizer(dataset.mean, dataset.std, dev, channels_last=layout)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if fast else nullcontext()
    cudnn = torch.backends.cudnn.flags(enabled=True, benchmark=True) if cuda else nullcontext()
    started = time.perf_counter()
    step = 0
    last_report = time.monotonic()
    samples = 0
    epoch_loss, epoch_acc = float("nan"), None
    try:
        with seeded(derive_seed(seed, 1), dev), cudnn:
            for epoch in range(epochs):
                model.train()
                perm = torch.randperm(n, device=dev, generator=generator)
                loss_sum = torch.zeros((), device=dev)
                correct = torch.zeros((), device=dev, dtype=torch.long)
                seen = 0
                for i in range(steps_per_epoch):
                    if should_stop is not None and should_stop():
                        raise Cancelled(
                            f"{stage}: stopped at epoch {epoch + 1}/{epochs}, step {step}/{total}"
                        )
                    idx = perm[i * batch_size : (i + 1) * batch_size]
                    if len(idx) == 1:
                        # Batch norm cannot train on one sample when a feature map is 1x1 (8x8 inputs);
                        # repeating it keeps the mean loss and gradient unchanged.
                        idx = idx.repeat(2)
                    xb = x.index_select(0, idx)
                    yb = y.index_select(0, idx)
                    if augmenter is not None:
                        xb = augmenter(xb)
                    inputs = normalise(xb)
                    opt.zero_grad(set_to_none=True)
                    try:
                        out, loss = _forward_backward(net, inputs, yb, autocast, regression)
                    except Exception as exc:
                        if net is model:
                            raise
                        # Compilation happens in the first forward and backward calls (and again for a
                        # new batch shape): a failure there ends compilation for this run, not the run.
                        log.warning("%s: torch.compile failed, training eagerly: %s", stage, _brief(exc))
                        net = model
                        opt.zero_grad(set_to_none=True)
                        out, loss = _forward_backward(net, inputs, yb, autocast, regression)
                    opt.step()
                    sched.step()
                    loss_sum += loss.detach() * len(yb)
                    if not regression:
                        correct += (out.detach().argmax(1) == yb).sum()
                    seen += len(yb)
                    step += 1
                    last = i == steps_per_epoch - 1
                    due = progress is not None and (
                        step % report_every == 0
                        if report_every is not None
                        else time.monotonic() - last_report >= report_seconds
                    )
                    if last or due:
                        last_report = time.monotonic()
                        epoch_loss = loss_sum.item() / seen
                        epoch_acc = None if regression else correct.item() / seen
                        if not math.isfinite(epoch_loss):
                            raise Diverged(f"{stage}: loss became {epoch_loss} at epoch {epoch + 1}")
                        if progress is not None:
                            progress(
                                ProgressEvent(
                                    step / total, epoch + 1, epochs, step, total, epoch_loss, epoch_acc, stage
                                )
                            )
                samples += seen
                if until is not None and epoch + 1 < epochs and until():
                    break
    finally:
        if layout:
            # channels_last weights are not contiguous, which breaks safetensors and torch.equal users.
            model.to(memory_format=torch.contiguous_format)
    return TrainStats(
        epoch + 1, step, samples, time.perf_counter() - started, epoch_loss, epoch_acc, net is not model
    )


CHANNELS_LAST_MIN_SIDE = 16
"""The fast path stores weights and inputs channels_last only for images at least this many pixels a side.

ResNet-18's last stage maps an 8x8 image (digits) to 1x1, where channels_last and contiguous strides describe
the same memory. There inductor in CUDA graph mode (torch 2.11, H200) compiled a step that asserted
channels_last strides on a contiguous layer4 weight and fell back to eager on every run; with this rule the
same test compiles there. No speed-up from channels_last was ever measured on maps that small. CIFAR's 32x32
keeps 4x4 in the last stage.
"""


def channels_last_helps(dataset: ArrayDataset) -> bool:
    """Whether the fast path lays this data set's images and the weights out channels_last."""
    return min(dataset.train_x.shape[-2:]) >= CHANNELS_LAST_MIN_SIDE


def compile_mode(backend: Backend, device: torch.device) -> str | None:
    """torch.compile's mode for a backend on a device: CUDA graphs for inductor on CUDA, else the default.

    Other backends take no mode, and CUDA graphs exist only on CUDA.
    """
    return CUDA_COMPILE_MODE if backend == "inductor" and device.type == "cuda" else None


def _compiled(model: nn.Module, backend: Backend, mode: str | None, stage: str) -> nn.Module:
    """torch.compile(model): a wrapper sharing its parameters; the model itself when compile refuses."""
    try:
        return torch.compile(model, backend=backend, mode=mode)
    except Exception as exc:  # an unknown backend or a platform torch.compile does not support
        log.warning("%s: torch.compile unavailable, training eagerly: %s", stage, _brief(exc))
        return model


def _brief(exc: BaseException) -> str:
    """An exception's type and first line, and its cause's: compile errors carry pages of code and advice."""
    cause = getattr(exc, "inner_exception", None) or exc.__cause__
    parts = []
    for e in (exc,) if cause is None else (exc, cause):
        lines = str(e).strip().splitlines()
        parts.append(f"{type(e).__name__}: {lines[0] if lines else ''}")
    return " <- ".join(parts)[:500]


def _forward_backward(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    autocast: AbstractContextManager[object],
    regression: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's outputs and loss, with the loss's gradients accumulated into the parameters."""
    with autocast:
        out = net(inputs)
        if regression:
            loss = F.mse_loss(out.float().reshape(len(targets), -1)[:, 0], targets)
        else:
            loss = F.cross_entropy(out, targets)
    loss.backward()
    return out, loss


def train(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    recipe: Recipe,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    labels: np.ndarray | None = None,
    stage: str = "train",
    compile_model: bool | None = None,
    compile_backend: Backend | None = None,
) -> TrainStats:
    """Train `model` in place on training rows `ids` (None = all) with a full recipe, augmentation too."""
    return fit(
        model,
        dataset,
        ids,
        epochs=recipe.epochs,
        lr=recipe.lr,
        seed=seed,
        batch_size=recipe.batch_size,
        optimizer=recipe.optimizer,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
        schedule=recipe.schedule,
        milestones=recipe.milestones,
        gamma=recipe.gamma,
        augment=recipe.augment,
        device=device,
        progress=progress,
        should_stop=should_stop,
        labels=labels,
        stage=stage,
        compile_model=compile_model,
        compile_backend=compile_backend,
    )
