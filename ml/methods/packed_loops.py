"""Packed forms of methods with a loop of their own (NegGrad+, SCRUB): K seeds in one pack.

ml/methods/packed.py packs the methods whose training is the trainer's fit; the methods here have a step of
their own (ml/methods/loops.py), so they get the pieces of that loop in a pack's form: _PackRows serves
every network its own batch of the same rows (network k's order and augmentation drawn from the generator
its own run would seed, in the same order), and one step runs the K batches side by side through the
PackedNet (ml/packed_net.py). Each network's loss depends on its own weights alone, so the gradient of their
sum is, for network k, the gradient of its own loss; SGD acts elementwise, so one optimiser over the pack is
K optimisers. SCRUB's teacher is the original model, the same for every network, and answers the pack's K
batches as one batch. Network k is what run_method(name, ..., seed=seeds[k]) returns, up to float rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import AugmentDraw, Normalizer, build_augmenter
from ml.data.base import ArrayDataset
from ml.errors import Diverged
from ml.methods.base import UnlearnData
from ml.methods.loops import _augment, _frozen, _Loop, _require_classes, _require_forget, _running_stats_kept
from ml.methods.neggrad_plus import forget_weight
from ml.methods.pack_run import PackRun, register_packed
from ml.methods.params import NegGradPlusParams, ScrubParams
from ml.methods.scrub import max_step_scale
from ml.methods.study import STAGE_1, STAGE_2
from ml.packed_net import PackedNet
from ml.specs import AugmentSpec
from ml.trainer import REPORT_SECONDS, ProgressEvent, _targets, make_optimizer, to_device


class _PackRows:
    """loops._Rows for a pack: the same rows for every network, each network drawing its own order and
    augmentation from the generator its own run's _Rows would seed (seed_for(index) of its seed)."""

    def __init__(
        self, data: UnlearnData, ids: np.ndarray, pack: PackRun, *, index: int, augment: AugmentSpec | None
    ):
        dataset = data.dataset
        dev = pack.device
        self.x = to_device(torch.from_numpy(np.ascontiguousarray(dataset.train_x[ids])), dev)
        self.y = to_device(_targets(dataset, ids, None), dev)
        self.generators = []
        for seed in pack.seeds_for(index):
            generator = torch.Generator(device=dev)
            generator.manual_seed(seed)
            self.generators.append(generator)
        self.augmenters = [build_augmenter(augment, g) for g in self.generators]
        self.normalise = Normalizer(dataset.mean, dataset.std, dev)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, size: int) -> int:
        """Batches in one pass."""
        return math.ceil(len(self) / size)

    def _orders(self) -> torch.Tensor:
        """Each network's fresh permutation of the rows, [K, n]."""
        return torch.stack(
            [torch.randperm(len(self), device=self.x.device, generator=g) for g in self.generators]
        )

    def epoch(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass per network in batches of `size` (the last one shorter): [K, b, ...], [K, b]."""
        order = self._orders()
        for start in range(0, len(self), size):
            yield self._take(order[:, start : start + size])

    def endless(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of min(size, n) forever, each network's passes freshly shuffled, as _Rows.endless."""
        size = min(size, len(self))
        pending = torch.zeros(len(self.generators), 0, dtype=torch.long, device=self.x.device)
        while True:
            while pending.shape[1] < size:
                pending = torch.cat([pending, self._orders()], dim=1)
            yield self._take(pending[:, :size])
            pending = pending[:, size:]

    def _take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if idx.shape[1] == 1:
            idx = idx.repeat(1, 2)  # batch norm cannot train on one sample (see _Rows._take)
        k, b = idx.shape
        x = self.x[idx]  # [K, b, C, H, W]
        flat = x.reshape(k * b, *x.shape[2:])
        if self.augmenters[0] is not None:
            # Each network draws from its own generators; the whole pack's batch is transformed at once.
            draws = AugmentDraw.cat([a.draw(b, *flat.shape[2:]) for a in self.augmenters])  # type: ignore[union-attr]
            flat = self.augmenters[0].apply(flat, draws)
        return self.normalise(flat).view(x.shape), self.y[idx]


def _task_losses(out: torch.Tensor, y: torch.Tensor, dataset: ArrayDataset) -> torch.Tensor:
    """loops._task_loss per network: outputs [K, B, outputs], targets [K, B] -> each network's mean loss [K]."""
    k, b = y.shape
    if dataset.task == "regression":
        return F.mse_loss(out.float()[..., 0], y, reduction="none").mean(1)
    return F.cross_entropy(out.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(1)


class _PackLoop(_Loop):
    """loops._Loop for a pack: each network's loss summed apart, a non-finite one named; events carry the
    networks' mean loss, as fit_packed's do."""

    def __init__(self, pack: PackRun, stage: str, steps: int, epochs: int) -> None:
        super().__init__(pack.run(), pack.progress, stage, steps, epochs)
        self._loss = torch.zeros(len(pack.seeds), device=pack.device)

    def after(self, loss: torch.Tensor, n: int, epoch: int) -> None:
        """Count a finished step (`loss`: each network's, [K]); about once a second and at the last, check
        every network's loss and report their mean."""
        self.step += 1
        self._loss += loss.detach() * n
        self._seen += n
        due = self.progress is not None and time.monotonic() - self._reported >= REPORT_SECONDS
        if self.step == self.steps or due:
            self._reported = time.monotonic()
            means = (self._loss / self._seen).tolist()
            bad = [j for j, v in enumerate(means) if not math.isfinite(v)]
            if bad:
                raise Diverged(
                    f"{self.stage}: loss became {means[bad[0]]} in model {bad[0]} of the pack at epoch {epoch}"
                )
            if self.progress is not None:
                self.progress(
                    ProgressEvent(
                        self.step / self.steps,
                        epoch,
                        self.epochs,
                        self.step,
                        self.steps,
                        sum(means) / len(means),
                        None,
                        self.stage,
                    )
                )
            self._loss.zero_()
            self._seen = 0


def _distill_kls(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """loops._distill_kl per network: KL(teacher || student) of the tempered softmaxes, [K, B, classes] -> [K]."""
    log_s = F.log_softmax(student / temperature, dim=2)
    log_t = F.log_softmax(teacher / temperature, dim=2)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(2).mean(1)
    return kl * temperature**2


def _packed(models: list[nn.Module], pack: PackRun) -> PackedNet:
    """The pack's networks as one PackedNet on its device, in training mode."""
    net = PackedNet(models).to(pack.device)
    net.train()
    return net


def _update(optimizer: torch.optim.Optimizer, losses: torch.Tensor) -> None:
    """One optimiser step on the networks' losses [K]: their sum's gradient is each network's own."""
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()


@register_packed("neggrad_plus")
def neggrad_plus(
    models: list[nn.Module], data: UnlearnData, params: NegGradPlusParams, pack: PackRun
) -> list[nn.Module]:
    """NegGrad+ per network: alpha L_retain - forget_weight() L_forget on its own retain batch and the next of its
    own cycling forget batches; the retain pass and the forget pass are separate forwards, as in neggrad_plus()."""
    _require_forget(data, "neggrad_plus")
    dataset = data.dataset
    retain = _PackRows(data, data.retain_ids, pack, index=STAGE_1, augment=_augment(data, params))
    forget = _PackRows(data, data.forget_ids, pack, index=STAGE_2, augment=_augment(data, params))
    net = _packed(models, pack)
    optimizer = make_optimizer(net, "sgd", params.lr, params.momentum, params.nesterov, params.weight_decay)
    loop = _PackLoop(pack, "neggrad_plus", params.epochs * retain.batches(params.batch_size), params.epochs)
    weight = forget_weight(params, len(data.forget_ids), len(data.retain_ids))
    forget_batches = forget.endless(params.batch_size)
    for epoch in range(1, params.epochs + 1):
        for x_r, y_r in retain.epoch(params.batch_size):
            x_f, y_f = next(forget_batches)
            loop.before()
            retain_loss = _task_losses(net(x_r), y_r, dataset)
            with _running_stats_kept(net):
                forget_loss = _task_losses(net(x_f), y_f, dataset)
            losses = params.alpha * retain_loss - weight * forget_loss
            _update(optimizer, losses)
            loop.after(losses, y_r.shape[1], epoch)
    net.store_into(models)
    return models


@register_packed("scrub")
def scrub(models: list[nn.Module], data: UnlearnData, params: ScrubParams, pack: PackRun) -> list[nn.Module]:
    """SCRUB per network, as scrub(): each epoch a max-step pass over its own forget batches while epoch <=
    max_epochs, then a min-step pass over its own retain batches. The teacher is the original model, one for
    all (every network starts from it); in eval mode it answers each image alone, so the pack's K batches go
    through it as one batch of K * B images."""
    _require_classes(data, "scrub")
    teacher = _frozen(models[0])
    augment = _augment(data, params)
    retain = _PackRows(data, data.retain_ids, pack, index=STAGE_1, augment=augment)
    forget = _PackRows(data, data.forget_ids, pack, index=STAGE_2, augment=augment)
    net = _packed(models, pack)
    optimizer = make_optimizer(net, "sgd", params.lr, params.momentum, params.nesterov, params.weight_decay)
    max_epochs = min(params.max_epochs, params.epochs)
    steps = params.epochs * retain.batches(params.batch_size) + max_epochs * forget.batches(
        params.forget_batch_size
    )
    loop = _PackLoop(pack, "scrub", steps, params.epochs)
    temperature = params.temperature
    scale = max_step_scale(params, len(data.forget_ids))

    def taught(x: torch.Tensor) -> torch.Tensor:
        """The teacher's outputs for the pack's batches [K, B, ...] -> [K, B, classes]."""
        with torch.no_grad():
            return teacher(x.reshape(-1, *x.shape[2:])).view(*x.shape[:2], -1)

    for epoch in range(1, params.epochs + 1):
        if epoch <= max_epochs:
            for x, _ in forget.epoch(params.forget_batch_size):
                loop.before()
                target = taught(x)
                losses = -scale * _distill_kls(net(x), target, temperature)
                _update(optimizer, losses)
                loop.after(losses, x.shape[1], epoch)
        for x, y in retain.epoch(params.batch_size):
            loop.before()
            target = taught(x)
            out = net(x)
            losses = params.ce_weight * _task_losses(out, y, data.dataset) + params.kl_weight * _distill_kls(
                out, target, temperature
            )
            _update(optimizer, losses)
            loop.after(losses, x.shape[1], epoch)
    net.store_into(models)
    return models
