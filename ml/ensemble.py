"""K networks of one architecture trained together in one process: one step updates all of them.

The K networks sit side by side in the channel axis of one wider network (ml/packed_net.py, PackedNet), so
the packed step computes exactly the K separate steps' outputs and gradients; SGD and Adam act elementwise,
so one optimiser over the packed tensors is K separate optimisers.

Each network keeps what a separate run has: its own initial weights (the models it is packed from), its own
training ids, data order and augmentation draws (a generator per network, seeded as fit seeds its own, so
network k draws the batches fit(seed=seeds[k]) would), and its own BatchNorm statistics. The trained weights
are written back into the K plain models, whose state dicts are exactly what fit produces.

Why grouped convolutions rather than torch.func's vmap over functional_call: docs/ensemble.md has the
measurement (digits, width 8, one CPU thread).
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from contextvars import copy_context
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import AugmentDraw, Normalizer, build_augmenter
from ml.data.base import ArrayDataset
from ml.errors import Cancelled, Diverged
from ml.packed_net import PackedNet
from ml.specs import AugmentSpec, Recipe
from ml.trainer import (
    REPORT_SECONDS,
    Backend,
    Optimizer,
    Progress,
    ProgressEvent,
    Schedule,
    StopFlag,
    TrainStats,
    _brief,
    _compiled,
    _targets,
    channels_last_helps,
    compile_default,
    compile_mode,
    derive_seed,
    make_optimizer,
    make_scheduler,
    resolve_device,
    seeded,
    select_ids,
    to_device,
)

log = logging.getLogger(__name__)


CPU_PACK_SIZE = 8
"""Networks per pack on a CPU: packing gained up to K = 8 and no more on a 2-core machine (docs/ensemble.md)."""

CUDA_PACK_CAP = 32
"""The most networks one pack holds on a GPU however much memory is free (benchmarks/gpu_check.py's ensemble
section measures K up to 32)."""

MEMORY_HEADROOM = 0.8
"""Share of the device's free memory a pack may plan to use (the allocator's fragmentation and cuDNN's
workspaces take the rest)."""


def packs_that_fit(free_bytes: int, per_model_bytes: int, cap: int = CUDA_PACK_CAP) -> int:
    """How many networks of per_model_bytes each fit in MEMORY_HEADROOM of free_bytes: at least 1, at most cap."""
    return max(1, min(cap, int(free_bytes * MEMORY_HEADROOM) // max(per_model_bytes, 1)))


def device_pack_size(
    model: nn.Module, input_shape: Sequence[int], batch_size: int, device: str | torch.device
) -> int:
    """How many networks like `model` one pack trains together on `device`.

    On a CPU, CPU_PACK_SIZE. On CUDA, as many as the free memory holds: one training step of one network
    (batch_size inputs of input_shape, bf16 autocast as fit runs it there, SGD with momentum) is measured, its
    weights, gradients, optimiser state and activations are one network's share, and a pack of K needs K of
    them (its tensors are the K networks' side by side). A pack that still runs out of memory is split in
    halves by its callers.
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return CPU_PACK_SIZE
    probe = copy.deepcopy(model).to(dev).train()
    weights = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    opt = torch.optim.SGD(probe.parameters(), lr=0.0, momentum=0.9)
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = probe(torch.zeros(batch_size, *input_shape, device=dev))
    out.float().sum().backward()
    opt.step()
    torch.cuda.synchronize(dev)
    per_model = torch.cuda.max_memory_allocated(dev) - base + weights
    del probe, opt, out
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(dev)
    return packs_that_fit(free, per_model)


def _pack_rows(
    dataset: ArrayDataset,
    ids: Sequence[np.ndarray | None],
    labels: Sequence[np.ndarray | None] | None,
    k: int,
) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Each network's validated rows and targets; all must have the same count, so every step is one shape."""
    if len(ids) != k:
        raise ValueError(f"expected {k} id sets (one per model), got {len(ids)}")
    lab = [None] * k if labels is None else list(labels)
    if len(lab) != k:
        raise ValueError(f"expected {k} label sets (one per model), got {len(lab)}")
    rows = [select_ids(dataset, i) for i in ids]
    sizes = sorted({len(r) for r in rows})
    if len(sizes) > 1:
        raise ValueError(f"a pack's id sets must have the same size, got sizes {sizes}; pack them apart")
    return rows, [_targets(dataset, r, y) for r, y in zip(rows, lab, strict=True)]


@dataclass(frozen=True)
class _Settings:
    """fit_packed's training settings, shared by every lane of a call."""

    epochs: int
    lr: float
    batch_size: int
    optimizer: Optimizer
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: Schedule
    milestones: Sequence[int]
    gamma: float
    augment: AugmentSpec | None
    stage: str
    report_every: int | None
    report_seconds: float
    fast: bool | None
    compile_model: bool
    compile_backend: Backend
    prepare: Callable[[PackedNet], AbstractContextManager[object]] | None


@dataclass(frozen=True)
class _Work:
    """What one fit_packed call trains: network j is models[j] on rows[j] with labels[j] and seeds[j]."""

    models: Sequence[nn.Module]
    dataset: ArrayDataset
    rows: Sequence[np.ndarray]
    labels: Sequence[torch.Tensor]
    seeds: Sequence[int]
    dev: torch.device
    settings: _Settings

    def part(self, networks: Sequence[int]) -> _Work:
        """The same work for the listed networks only (a lane's)."""
        return replace(
            self,
            models=[self.models[j] for j in networks],
            rows=[self.rows[j] for j in networks],
            labels=[self.labels[j] for j in networks],
            seeds=[self.seeds[j] for j in networks],
        )


def pack_lanes(device: str | torch.device, k: int) -> int:
    """How many lanes a pack of k trains in by default: on a CPU, one per torch thread (at most k); else 1.

    A lane is a sub-pack trained in a thread of its own on one torch thread. oneDNN's kernels for a pack of
    small networks are too small to split between threads (a second thread added 3% to a pack of 8 width-8
    networks), while two sub-packs on two threads each keep a core busy (docs/ensemble.md, "Lanes").
    """
    if resolve_device(device).type != "cpu":
        return 1
    return max(1, min(k, torch.get_num_threads()))


def fit_packed(
    models: Sequence[nn.Module],
    dataset: ArrayDataset,
    ids: Sequence[np.ndarray | None],
    *,
    seeds: Sequence[int],
    epochs: int,
    lr: float,
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
    labels: Sequence[np.ndarray | None] | None = None,
    stage: str = "train",
    report_every: int | None = None,
    report_seconds: float = REPORT_SECONDS,
    fast: bool | None = None,
    compile_model: bool | None = None,
    compile_backend: Backend | None = None,
    prepare: Callable[[PackedNet], AbstractContextManager[object]] | None = None,
    lanes: int | None = None,
) -> list[TrainStats]:
    """Train models[k] in place on rows ids[k] with seed seeds[k], all K in one loop; fit's settings.

    `labels[k]` overrides network k's targets (one per id). `prepare(pack)` is entered around the loop once the
    pack is built: where a method adds its hooks (gradient rewrites act elementwise, so one hook on a packed
    tensor is the hook on each network's slice). Progress is reported as fit reports it (each epoch's end, and every report_seconds or report_every
    steps between); events carry the pack's mean loss and accuracy; a non-finite loss in any network raises
    Diverged naming it. The returned TrainStats (one per model) share the pack's wall time.

    `lanes` (default pack_lanes: one per CPU thread) splits the pack into that many sub-packs of consecutive
    networks, each trained in its own thread on one torch thread, each with its own `prepare`; network k
    trains as it would in one pack (its own seed, batches and statistics), and progress, cancelling and
    errors are the whole call's, reported from the calling thread.
    """
    k = len(models)
    if k == 0:
        raise ValueError("a pack needs at least one model")
    if len(seeds) != k:
        raise ValueError(f"expected {k} seeds (one per model), got {len(seeds)}")
    rows, targets = _pack_rows(dataset, ids, labels, k)
    dev = resolve_device(device)
    if len(rows[0]) == 0 or epochs <= 0:
        return [TrainStats(0, 0, 0, 0.0, float("nan"), None) for _ in models]
    default = compile_default()  # read here: a context variable of the caller's, which lanes copy anyway
    settings = _Settings(
        epochs,
        lr,
        batch_size,
        optimizer,
        momentum,
        nesterov,
        weight_decay,
        schedule,
        milestones,
        gamma,
        augment,
        stage,
        report_every,
        report_seconds,
        fast,
        default.enabled if compile_model is None else compile_model,
        default.backend if compile_backend is None else compile_backend,
        prepare,
    )
    work = _Work(models, dataset, rows, targets, seeds, dev, settings)
    count = pack_lanes(dev, k) if lanes is None else max(1, min(lanes, k))
    if settings.compile_model:
        count = 1  # torch.compile traces and compiles in one thread at a time: one loop, as on CUDA
    # One seeding for the whole call: torch's global generators are the process's, not a lane's.
    with seeded(derive_seed(seeds[0], 1, k), dev):
        if count == 1:
            return _fit_lane(work, 0, progress, should_stop)
        return _fit_in_lanes(work, count, progress, should_stop)


LANE_POLL_SECONDS = 0.05
"""How often the calling thread forwards the lanes' progress and checks should_stop while they train."""


def _fit_in_lanes(
    work: _Work, count: int, progress: Progress | None, should_stop: StopFlag | None
) -> list[TrainStats]:
    """The pack as `count` sub-packs, each in its own thread on one torch thread; callbacks stay in this one.

    The lanes only put progress events on a queue and read a stop flag: the caller's progress and
    should_stop (which may reach a database) run in the calling thread, as they do without lanes. A lane that
    fails stops the others, and its error is raised; a stop the caller asked for raises the lanes' Cancelled.
    """
    parts = [list(map(int, part)) for part in np.array_split(np.arange(len(work.models)), count)]
    sizes = [len(part) for part in parts]
    stop = threading.Event()
    events: queue.SimpleQueue[tuple[int, ProgressEvent]] = queue.SimpleQueue()
    latest: dict[int, ProgressEvent] = {}
    threads = torch.get_num_threads()
    per_lane = max(1, threads // count)

    def lane(i: int, part: list[int]) -> list[TrainStats]:
        torch.set_num_threads(per_lane)  # this thread's OpenMP team; restored for the caller below
        return _fit_lane(
            work.part(part),
            part[0],
            None if progress is None else (lambda event: events.put((i, event))),
            stop.is_set,
        )

    def forward_progress() -> None:
        assert progress is not None
        while not events.empty():
            i, event = events.get()
            latest[i] = event
            progress(_combined(latest, sizes))

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(count, thread_name_prefix="pack-lane") as pool:
            # Each lane runs in a copy of the caller's context (its job id for log lines, for one).
            futures = [pool.submit(copy_context().run, lane, i, part) for i, part in enumerate(parts)]
            try:
                while not all(f.done() for f in futures):
                    wait(futures, timeout=LANE_POLL_SECONDS)
                    if progress is not None:
                        forward_progress()
                    if any(f.done() and f.exception() is not None for f in futures) or (
                        should_stop is not None and should_stop()
                    ):
                        stop.set()
            except BaseException:  # a callback of the caller's failed: the lanes stop before it is raised
                stop.set()
                raise
        if progress is not None:
            forward_progress()
    finally:
        torch.set_num_threads(threads)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
    seconds = time.perf_counter() - started
    return [replace(stats, seconds=seconds) for f in futures for stats in f.result()]


def _combined(latest: dict[int, ProgressEvent], sizes: Sequence[int]) -> ProgressEvent:
    """The whole pack's progress from each lane's latest event (lane i holds sizes[i] networks): the mean
    fraction over all lanes (one not yet reported counts 0), loss and accuracy weighted by the networks of the
    lanes that have, and the step and epoch of the slowest."""
    weights = [sizes[i] for i in latest]

    def mean(values: Sequence[float]) -> float:
        return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)

    events = list(latest.values())
    accuracies = [e.accuracy for e in events]
    return replace(
        min(events, key=lambda e: e.step),
        fraction=sum(e.fraction for e in events) / len(sizes),
        loss=mean([e.loss for e in events]),
        accuracy=None
        if any(a is None for a in accuracies)
        else mean([a for a in accuracies if a is not None]),
    )


def _fit_lane(
    work: _Work, first: int, progress: Progress | None, should_stop: StopFlag | None
) -> list[TrainStats]:
    """One pack's training loop: work's network j is network first + j of the call (named so when it diverges)."""
    models, dataset, rows, labels, seeds, dev, s = (
        work.models,
        work.dataset,
        work.rows,
        work.labels,
        work.seeds,
        work.dev,
        work.settings,
    )
    k, n, epochs, batch_size, stage = len(models), len(rows[0]), s.epochs, s.batch_size, s.stage
    cuda = dev.type == "cuda"
    fast = cuda if s.fast is None else s.fast
    compile_model, backend = s.compile_model, s.compile_backend
    regression = dataset.task == "regression"
    x = to_device(torch.from_numpy(np.ascontiguousarray(dataset.train_x)), dev)
    # Row r of network k's data is x[index[k, r]]; the targets are stacked the same way.
    index = to_device(torch.from_numpy(np.stack(rows)), dev)
    y = to_device(torch.stack(list(labels)), dev)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    pack = PackedNet(models).to(dev)
    layout = fast and channels_last_helps(dataset)
    if layout:
        pack.to(memory_format=torch.channels_last)
    wide = pack.net
    net = _compiled(wide, backend, compile_mode(backend, dev), stage) if compile_model else wide
    opt = make_optimizer(pack, s.optimizer, s.lr, s.momentum, s.nesterov, s.weight_decay)
    sched = make_scheduler(opt, s.schedule, s.lr, steps_per_epoch, total, s.milestones, s.gamma)
    generators = []
    for seed in seeds:
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        generators.append(g)
    augmenters = [build_augmenter(s.augment, g) for g in generators]
    normalise = Normalizer(dataset.mean, dataset.std, dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if fast else nullcontext()
    cudnn = torch.backends.cudnn.flags(enabled=True, benchmark=True) if cuda else nullcontext()
    arange_k = torch.arange(k, device=dev).view(k, 1)
    started = time.perf_counter()
    step = samples = 0
    last_report = time.monotonic()
    epoch = 0
    epoch_loss = torch.full((k,), float("nan"))
    epoch_acc: torch.Tensor | None = None
    try:
        hooks = nullcontext() if s.prepare is None else s.prepare(pack)
        with cudnn, hooks:
            for epoch in range(epochs):
                pack.train()
                perm = torch.stack([torch.randperm(n, device=dev, generator=g) for g in generators])
                loss_sum = torch.zeros(k, device=dev)
                correct = torch.zeros(k, device=dev, dtype=torch.long)
                seen = 0
                for i in range(steps_per_epoch):
                    if should_stop is not None and should_stop():
                        raise Cancelled(
                            f"{stage}: stopped at epoch {epoch + 1}/{epochs}, step {step}/{total}"
                        )
                    pos = perm[:, i * batch_size : (i + 1) * batch_size]
                    if pos.shape[1] == 1:
                        pos = pos.repeat(1, 2)  # batch norm cannot train on one sample (see fit)
                    b = pos.shape[1]
                    xb = x[index.gather(1, pos)]  # [K, b, C, H, W]
                    yb = y[arange_k, pos]  # [K, b]
                    flat = xb.reshape(k * b, *xb.shape[2:])
                    if augmenters[0] is not None:
                        # Each network draws from its own generators; the whole pack's batch is transformed at once.
                        draws = AugmentDraw.cat([a.draw(b, *flat.shape[2:]) for a in augmenters])  # type: ignore[union-attr]
                        flat = augmenters[0].apply(flat, draws)
                    inputs = normalise(flat).view(xb.shape)
                    inputs = pack.side_by_side(inputs)
                    if layout:  # channels_last weights take channels_last inputs, as in fit
                        inputs = inputs.contiguous(memory_format=torch.channels_last)
                    # Not on a CPU's NCHW weights: oneDNN's convolution backward corrupted the heap on
                    # channels_last inputs there (3 channels, 32x32; tests/unit/test_ensemble.py).
                    opt.zero_grad(set_to_none=True)
                    targets = yb.transpose(0, 1)
                    try:
                        out, per_net = _step(net, inputs, targets, autocast, regression)
                    except Exception as exc:
                        if net is wide:
                            raise
                        log.warning("%s: torch.compile failed, training eagerly: %s", stage, _brief(exc))
                        net = wide
                        opt.zero_grad(set_to_none=True)
                        out, per_net = _step(net, inputs, targets, autocast, regression)
                    opt.step()
                    sched.step()
                    loss_sum += per_net.detach() * b
                    if not regression:
                        correct += (out.detach().argmax(2) == targets).sum(0)
                    seen += b
                    step += 1
                    last = i == steps_per_epoch - 1
                    due = progress is not None and (
                        step % s.report_every == 0
                        if s.report_every is not None
                        else time.monotonic() - last_report >= s.report_seconds
                    )
                    if last or due:
                        last_report = time.monotonic()
                        epoch_loss = (loss_sum / seen).float().cpu()
                        epoch_acc = None if regression else (correct.float() / seen).cpu()
                        bad = [j for j, v in enumerate(epoch_loss.tolist()) if not math.isfinite(v)]
                        if bad:
                            raise Diverged(
                                f"{stage}: loss became {epoch_loss[bad[0]].item()} in model {first + bad[0]} of the"
                                f" pack at epoch {epoch + 1}"
                            )
                        if progress is not None:
                            progress(
                                ProgressEvent(
                                    step / total,
                                    epoch + 1,
                                    epochs,
                                    step,
                                    total,
                                    float(epoch_loss.mean()),
                                    None if epoch_acc is None else float(epoch_acc.mean()),
                                    stage,
                                )
                            )
                samples += seen
    finally:
        if layout:
            pack.to(memory_format=torch.contiguous_format)
    for model in models:
        model.to(dev)
    pack.store_into(models)
    seconds = time.perf_counter() - started
    return [
        TrainStats(
            epoch + 1,
            step,
            samples,
            seconds,
            float(epoch_loss[j]),
            None if epoch_acc is None else float(epoch_acc[j]),
            net is not wide,
        )
        for j in range(k)
    ]


def _step(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    autocast: AbstractContextManager[object],
    regression: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs [B, K, outputs] and each network's mean loss [K]; their sum's gradients land in the parameters.

    Network k's loss depends only on network k's weights, so the sum's gradient for them is its own.
    """
    b, k = targets.shape
    with autocast:
        out = net(inputs).view(b, k, -1)
        if regression:
            losses = F.mse_loss(out.float()[..., 0], targets, reduction="none").mean(0)
        else:
            losses = (
                F.cross_entropy(out.reshape(b * k, -1), targets.reshape(-1), reduction="none")
                .view(b, k)
                .mean(0)
            )
    losses.sum().backward()
    return out, losses


def train_packed(
    models: Sequence[nn.Module],
    dataset: ArrayDataset,
    ids: Sequence[np.ndarray | None],
    recipe: Recipe,
    *,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    stage: str = "train",
    compile_model: bool | None = None,
    lanes: int | None = None,
) -> list[TrainStats]:
    """train() for a pack: models[k] trains on ids[k] with seeds[k] and the full recipe (lanes: fit_packed's)."""
    return fit_packed(
        models,
        dataset,
        ids,
        seeds=seeds,
        epochs=recipe.epochs,
        lr=recipe.lr,
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
        stage=stage,
        compile_model=compile_model,
        lanes=lanes,
    )
