"""Unlearning methods for K seeds at once: one pack of K networks (ml/ensemble.py) instead of K runs.

run_packed(name, model, data, params, seeds=...) returns K new models; model k is what
run_method(name, model, data, params, seed=seeds[k]) returns, up to float rounding: each network starts from
its own copy of the model (retrain: from the fresh weights its seed builds), draws its batches, augmentation
and random labels from its seed's streams, and keeps its own BatchNorm statistics and optimiser state. The
methods here are those whose training is the trainer's fit plus elementwise gradient hooks (a hook on a
packed tensor acts on every network's slice as it would on that network's own tensor);
ml/methods/packed_loops.py holds the packed forms of methods with a loop of their own (neggrad_plus, scrub);
both register in ml/methods/pack_run.py. The others run one per task. ml/methods/packing.py names the
packed ones, torch-free.

Seeds beyond what the device holds (ml.ensemble.device_pack_size, or the caller's pack_size) train in several
packs, one after the other, and a pack that still runs out of CUDA memory runs in halves.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from ml.ensemble import device_pack_size, fit_packed, train_packed
from ml.methods import packed_loops  # noqa: F401  (registers the packed forms of neggrad_plus and scrub)
from ml.methods.base import UnlearnData, parse_params, registered
from ml.methods.base import run as run_method
from ml.methods.beyond import l1_penalty, masked_decay, saliency_masks, wrong_labels
from ml.methods.cost import sample_passes
from ml.methods.gradient_ascent import ascending, ascent_lr
from ml.methods.loops import REPAIR_DRAWS, repair_ids
from ml.methods.pack_run import PACKED, PackedMethod, PackRun, register_packed
from ml.methods.params import (
    FinetuneParams,
    GradientAscentParams,
    L1SparseParams,
    MethodParams,
    PoisonFullParams,
    PoisonParams,
    RandomLabelParams,
    RepairParams,
    RetrainParams,
    SalUnParams,
    method_spec,
)
from ml.methods.study import DRAWS, REPAIR, STAGE_1, poison_set, random_labels
from ml.models import build_model
from ml.packed_net import PackedNet
from ml.trainer import (
    Optimizer,
    Progress,
    ProgressEvent,
    StopFlag,
    TrainStats,
    resolve_device,
    seeded,
)


def run_packed(
    name: str,
    model: nn.Module | Sequence[nn.Module],
    data: UnlearnData,
    params: BaseModel | dict[str, Any] | None,
    *,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    pack_size: int | None = None,
) -> list[nn.Module]:
    """run() for several seeds: new models on `device` (model k: seeds[k]), the input untouched.

    `model` is the one model every run starts from, or one per seed (run k starts from model[k]: several
    originals, each unlearned once). The seeds train in packs of pack_size (default: as many as the device
    holds, device_pack_size), one pack after the other; progress runs from 0 to 1 over all of them.
    """
    if name not in PACKED:
        raise ValueError(f"method {name!r} does not run packed; packed: {', '.join(sorted(PACKED))}")
    if not seeds:
        raise ValueError("a pack needs at least one seed")
    starts = [model] * len(seeds) if isinstance(model, nn.Module) else list(model)
    if len(starts) != len(seeds):
        raise ValueError(f"{len(starts)} models for {len(seeds)} seeds: give one model, or one per seed")
    registered()  # every method module loaded, as run() has it
    typed = parse_params(method_spec(name), params)
    dev = resolve_device(device)

    size = pack_size or device_pack_size(
        starts[0], data.dataset.train_x.shape[1:], _batch_size(typed, data), dev
    )
    everything = list(seeds)

    def attempt(first: int, part: list[int]) -> list[nn.Module]:
        """Seeds everything[first : first + len(part)] as one pack (in halves if the device runs out of memory)."""
        works = [copy.deepcopy(starts[first + j]).to(dev) for j in range(len(part))]
        share = _share(progress, first / len(everything), len(part) / len(everything))
        try:
            with seeded(part[0], dev):
                return PACKED[name](works, data, typed, PackRun(tuple(part), dev, share, should_stop))
        except torch.cuda.OutOfMemoryError:
            if len(part) < 2:
                raise
        del works  # leave the except block first, so the failed pack's tensors can be freed
        torch.cuda.empty_cache()
        middle = len(part) // 2
        return attempt(first, part[:middle]) + attempt(first + middle, part[middle:])

    out = [
        m
        for start in range(0, len(everything), size)
        for m in attempt(start, everything[start : start + size])
    ]
    return [m.to(dev) for m in out]


def _batch_size(params: Any, data: UnlearnData) -> int:
    """The batch a method's training steps take (retrain: its recipe's)."""
    if isinstance(params, MethodParams):
        return params.batch_size
    recipe = getattr(params, "recipe", None) or data.recipe
    return recipe.batch_size


def _share(progress: Progress | None, start: float, width: float) -> Progress | None:
    """Progress of one pack of several, as its share of the whole: [0, 1] -> [start, start + width]."""
    if progress is None or (start == 0.0 and width == 1.0):
        return progress

    def report(event: ProgressEvent) -> None:
        progress(replace(event, fraction=min(1.0, start + width * event.fraction)))

    return report


def _fit(
    models: list[nn.Module],
    data: UnlearnData,
    ids: np.ndarray | list[np.ndarray],
    p: MethodParams,
    pack: PackRun,
    *,
    epochs: int,
    lr: float,
    stage: str,
    index: int,
    progress: Progress | None,
    labels: Sequence[np.ndarray] | None = None,
    optimizer: Optimizer = "sgd",
    weight_decay: float | None = None,
    prepare: Callable[[PackedNet], AbstractContextManager[object]] | None = None,
) -> list[TrainStats]:
    """fit_packed with a method's optimiser settings: the packed form of the methods' own _fit. `ids` are
    every network's rows, or a list of each one's own."""
    return fit_packed(
        models,
        data.dataset,
        ids if isinstance(ids, list) else [ids] * len(models),
        seeds=pack.seeds_for(index),
        epochs=epochs,
        lr=lr,
        batch_size=p.batch_size,
        optimizer=optimizer,
        momentum=p.momentum,
        nesterov=p.nesterov,
        weight_decay=p.weight_decay if weight_decay is None else weight_decay,
        augment=data.recipe.augment if p.augment else None,
        device=pack.device,
        progress=progress,
        should_stop=pack.should_stop,
        labels=labels,
        stage=stage,
        prepare=prepare,
    )


@register_packed("retrain")
def retrain(
    models: list[nn.Module], data: UnlearnData, params: RetrainParams, pack: PackRun
) -> list[nn.Module]:
    """Fresh weights per seed (built as retrain builds them: first draw after seeding), trained together."""
    dataset = data.dataset
    fresh = []
    for seed in pack.seeds:
        with seeded(seed, pack.device):
            fresh.append(build_model(data.arch, dataset.num_classes, dataset.in_channels))
    train_packed(
        fresh,
        dataset,
        [data.retain_ids] * len(fresh),
        params.recipe or data.recipe,
        seeds=pack.seeds_for(STAGE_1),
        device=pack.device,
        progress=pack.progress,
        should_stop=pack.should_stop,
        stage="retrain",
    )
    return fresh


@register_packed("finetune")
def finetune(
    models: list[nn.Module], data: UnlearnData, params: FinetuneParams, pack: PackRun
) -> list[nn.Module]:
    """A few epochs on the retain set alone, per network."""
    _fit(
        models,
        data,
        data.retain_ids,
        params,
        pack,
        epochs=params.epochs,
        lr=params.lr,
        stage="finetune",
        index=STAGE_1,
        progress=pack.progress,
    )
    return models


@register_packed("random_label")
def random_label(
    models: list[nn.Module], data: UnlearnData, params: RandomLabelParams, pack: PackRun
) -> list[nn.Module]:
    """Retain mixed with the forget set relabelled wrongly, each network with its own seed's wrong labels."""
    dataset = data.dataset
    kept = dataset.train_y[data.retain_ids]
    labels = [
        np.concatenate([kept, wrong_labels(dataset, data.forget_ids, np.random.default_rng(seed))])
        for seed in pack.seeds_for(DRAWS)
    ]
    _fit(
        models,
        data,
        np.concatenate([data.retain_ids, data.forget_ids]),
        params,
        pack,
        epochs=params.epochs,
        lr=params.lr,
        stage="random_label",
        index=STAGE_1,
        progress=pack.progress,
        labels=labels,
        optimizer=params.optimizer,
    )
    return models


@register_packed("gradient_ascent")
def gradient_ascent(
    models: list[nn.Module], data: UnlearnData, params: GradientAscentParams, pack: PackRun
) -> list[nn.Module]:
    """The trainer's steps on the forget set with every gradient negated (a hook, elementwise), per network;
    the running statistics stay the original's, as in gradient_ascent()."""
    lr = ascent_lr(params, len(data.forget_ids))

    def ascend(packed: PackedNet) -> AbstractContextManager[None]:
        return ascending(packed.net)

    _fit(
        models,
        data,
        data.forget_ids,
        params,
        pack,
        epochs=params.epochs,
        lr=lr,
        stage="ascent",
        index=STAGE_1,
        progress=pack.progress,
        prepare=ascend,
    )
    return models


def poisoning(name: str, *, full: bool) -> PackedMethod:
    """poison (the forget set with random labels) or poison_full (after the retain set) for a pack, each
    network with its own seed's labels (study.poison_set, as the single form draws them)."""

    def packed(
        models: list[nn.Module], data: UnlearnData, params: PoisonParams | PoisonFullParams, pack: PackRun
    ) -> list[nn.Module]:
        sets = [poison_set(data, np.random.default_rng(seed), full=full) for seed in pack.seeds_for(DRAWS)]
        _fit(
            models,
            data,
            sets[0][0],
            params,
            pack,
            epochs=params.epochs,
            lr=params.lr,
            stage=name,
            index=STAGE_1,
            progress=pack.progress,
            labels=[labels for _ids, labels in sets],
        )
        return models

    packed.__name__ = packed.__qualname__ = name
    return packed


register_packed("poison")(poisoning("poison", full=False))
register_packed("poison_full")(poisoning("poison_full", full=True))


@register_packed("l1_sparse")
def l1_sparse(
    models: list[nn.Module], data: UnlearnData, params: L1SparseParams, pack: PackRun
) -> list[nn.Module]:
    """Fine-tune on retain with gamma (1 - e / epochs) sign(theta) added to every gradient, e read from the steps."""
    steps_per_epoch = math.ceil(len(data.retain_ids) / params.batch_size)

    def penalty(packed: PackedNet) -> AbstractContextManager[None]:
        return l1_penalty(packed.net, params, steps_per_epoch=steps_per_epoch)

    _fit(
        models,
        data,
        data.retain_ids,
        params,
        pack,
        epochs=params.epochs,
        lr=params.lr,
        stage="l1_sparse",
        index=STAGE_1,
        progress=pack.progress,
        prepare=penalty,
    )
    return models


@register_packed("salun")
def salun(models: list[nn.Module], data: UnlearnData, params: SalUnParams, pack: PackRun) -> list[nn.Module]:
    """SalUn with one saliency mask (every network starts from the same model, so it is the same for all)
    and each network's own random forget labels; weight decay is the hook's, masked, as in salun()."""
    if not len(data.forget_ids):
        raise ValueError("salun needs forget samples")
    dataset = data.dataset
    n_forget, n_retain = len(data.forget_ids), len(data.retain_ids)
    first, second = pack.run().stages([n_forget, params.epochs * (n_retain + n_forget)])
    masks = saliency_masks(models[0], data, params.sparsity, params.batch_size, pack.run(), first)
    kept = dataset.train_y[data.retain_ids]
    labels = [
        np.concatenate([kept, random_labels(dataset, n_forget, np.random.default_rng(seed))])
        for seed in pack.seeds_for(DRAWS)
    ]

    def masked(packed: PackedNet) -> AbstractContextManager[None]:
        wide = {name: packed.stack(name, [mask] * packed.k) for name, mask in masks.items()}
        return masked_decay(packed.net, wide, params.weight_decay)

    _fit(
        models,
        data,
        np.concatenate([data.retain_ids, data.forget_ids]),
        params,
        pack,
        epochs=params.epochs,
        lr=params.lr,
        stage="salun",
        index=STAGE_1,
        progress=second,
        labels=labels,
        weight_decay=0.0,
        prepare=masked,
    )
    return models


REPAIRING = ("hybrid", "prune", "prune_last_layer", "prune_complex", "activation_reset", "noise_reset")
"""Methods that end by fine-tuning on the retain set (RepairParams, the study's `_repair`): their stages before
it are resets and short passes over the forget set, their cost is mostly the repair."""


def repairing(name: str) -> PackedMethod:
    """A repairing method for a pack: each network's stages before the repair run alone, as its own run of
    the method with epochs=0 (which skips the repair) under its own seed, then the K repairs train together
    with the repair stage's seeds and the method's settings. Network k is what run_method(name, ...,
    seed=seeds[k]) returns, up to float rounding in the repair."""

    def packed(
        models: list[nn.Module], data: UnlearnData, params: RepairParams, pack: PackRun
    ) -> list[nn.Module]:
        total = sample_passes(name, params, data) or 1.0
        before = sample_passes(name, params.model_copy(update={"epochs": 0}), data) / total
        share = before / len(models)
        reset = [
            run_method(
                name,
                model,
                data,
                params.model_copy(update={"epochs": 0}),
                seed=seed,
                device=pack.device,
                progress=_share(pack.progress, k * share, share),
                should_stop=pack.should_stop,
            )
            for k, (model, seed) in enumerate(zip(models, pack.seeds, strict=True))
        ]
        _fit(
            reset,
            data,
            [repair_ids(data, params, seed) for seed in pack.seeds_for(REPAIR_DRAWS)],
            params,
            pack,
            epochs=params.epochs,
            lr=params.lr,
            stage="retain",
            index=REPAIR,
            progress=_share(pack.progress, before, 1.0 - before),
        )
        return reset

    packed.__name__ = packed.__qualname__ = name
    return packed


for _name in REPAIRING:
    register_packed(_name)(repairing(_name))
