"""The study's unlearning methods, with its defaults; every plain training loop is the shared trainer's.

Each function receives a private copy of the model from run() and may change it in place.
Bugs of the study's code fixed here (see the comments at each):
- prune_complex: the retain copy's learning rate was written `0.01 // 3`, which is 0 (nothing was learnt).
- activation_reset: activation means were divided by the wrong count; here by the number of samples.
- poison_full: the study's loader was not shuffled, so every epoch ended on the poisoned samples.
- one method imported a module missing from the study's code; every method here is self-contained.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ml.data.base import ArrayDataset
from ml.logits import accuracy, logits
from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.cost import repair_passes
from ml.methods.loops import DRAWS, REPAIR, REPAIR_DRAWS, STAGE_1, STAGE_2, _fit, repair_ids, retain_sample
from ml.methods.params import (
    ActivationResetParams,
    FinetuneParams,
    HybridParams,
    NoneParams,
    PoisonFullParams,
    PoisonParams,
    PruneComplexParams,
    PruneLastLayerParams,
    PruneParams,
    RepairParams,
    RetrainParams,
)
from ml.models import build_model
from ml.trainer import Progress, train


def random_labels(dataset: ArrayDataset, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random classes, or for regression targets uniform over the training targets' range."""
    if dataset.task == "regression":
        lo, hi = float(dataset.train_y.min()), float(dataset.train_y.max())
        return rng.uniform(lo, hi, n).astype(np.float32)
    return rng.integers(0, dataset.num_classes, n, dtype=np.int64)


def poison_set(data: UnlearnData, rng: np.random.Generator, *, full: bool) -> tuple[np.ndarray, np.ndarray]:
    """What poison trains on: the forget set with random labels drawn from `rng`; with `full` (poison_full),
    after the retain set with its own labels. Shared by the single and the packed forms."""
    noise = random_labels(data.dataset, len(data.forget_ids), rng)
    if not full:
        return data.forget_ids, noise
    ids = np.concatenate([data.retain_ids, data.forget_ids])
    return ids, np.concatenate([data.dataset.train_y[data.retain_ids], noise])


def final_linear(model: nn.Module) -> nn.Linear:
    """The layer prune_last_layer and activation_reset touch: ResNet18.final_layer(), else the last Linear."""
    if hasattr(model, "final_layer"):
        return model.final_layer()
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def kaiming_like(weight: torch.Tensor) -> torch.Tensor:
    """Fresh Kaiming-normal values like `weight`: fan_out for convs (as the model's init), else fan_in."""
    fresh = torch.empty_like(weight)
    mode = "fan_out" if weight.ndim == 4 else "fan_in"
    return nn.init.kaiming_normal_(fresh, mode=mode, nonlinearity="relu")


def lowest(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mask of the round(quantile * n) smallest entries (exactly that many, ties broken by position)."""
    flat = values.flatten()
    k = round(quantile * flat.numel())
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=values.device)
    if k:
        mask[torch.topk(flat, k, largest=False, sorted=False).indices] = True
    return mask.view_as(values)


@torch.no_grad()
def reinit_where(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Re-initialise the masked entries of `weight` (Kaiming normal), in place."""
    weight.copy_(torch.where(mask, kaiming_like(weight), weight))


def _repair(
    model: nn.Module, data: UnlearnData, p: RepairParams, run: Run, progress: Progress | None
) -> None:
    """Fine-tune on the retain set after a reset (the last stage of most methods): all of it, or the run's
    random repair_share of it."""
    _fit(
        model,
        data,
        repair_ids(data, p, run.seed_for(REPAIR_DRAWS)),
        p,
        run,
        epochs=p.epochs,
        lr=p.lr,
        stage="retain",
        index=REPAIR,
        progress=progress,
    )


@register_method("none")
def unchanged(model: nn.Module, data: UnlearnData, params: NoneParams, run: Run) -> nn.Module:
    """The worst case: the (copied) model as it is, a floor for every evaluation."""
    return model


@register_method("retrain")
def retrain(model: nn.Module, data: UnlearnData, params: RetrainParams, run: Run) -> nn.Module:
    """Fresh weights trained on the retain set only: the reference every other method is judged against."""
    dataset = data.dataset
    fresh = build_model(data.arch, dataset.num_classes, dataset.in_channels)
    train(
        fresh,
        dataset,
        data.retain_ids,
        params.recipe or data.recipe,
        seed=run.seed_for(STAGE_1),
        device=run.device,
        progress=run.progress,
        should_stop=run.should_stop,
        stage="retrain",
    )
    return fresh


@register_method("finetune")
def finetune(model: nn.Module, data: UnlearnData, params: FinetuneParams, run: Run) -> nn.Module:
    """Catastrophic forgetting: a few epochs on the retain set alone."""
    _fit(
        model,
        data,
        data.retain_ids,
        params,
        run,
        epochs=params.epochs,
        lr=params.lr,
        stage="finetune",
        index=STAGE_1,
        progress=run.progress,
    )
    return model


@register_method("poison")
def poison(model: nn.Module, data: UnlearnData, params: PoisonParams, run: Run) -> nn.Module:
    """Train on the forget set with random labels, so the model unlearns its answers there."""
    ids, labels = poison_set(data, np.random.default_rng(run.seed_for(DRAWS)), full=False)
    _fit(
        model,
        data,
        ids,
        params,
        run,
        epochs=params.epochs,
        lr=params.lr,
        stage="poison",
        index=STAGE_1,
        progress=run.progress,
        labels=labels,
    )
    return model


@register_method("poison_full")
def poison_full(model: nn.Module, data: UnlearnData, params: PoisonFullParams, run: Run) -> nn.Module:
    """Train on retain plus randomly relabelled forget samples, mixed, so accuracy elsewhere is kept."""
    ids, labels = poison_set(data, np.random.default_rng(run.seed_for(DRAWS)), full=True)
    # The study's loader here was not shuffled (each epoch ended on the poisoned block); ours is.
    _fit(
        model,
        data,
        ids,
        params,
        run,
        epochs=params.epochs,
        lr=params.lr,
        stage="poison_full",
        index=STAGE_1,
        progress=run.progress,
        labels=labels,
    )
    return model


@register_method("hybrid")
def hybrid(model: nn.Module, data: UnlearnData, params: HybridParams, run: Run) -> nn.Module:
    """The study's two stage method: poison the forget set, then repair on the retain set."""
    n_forget, n_retain = len(data.forget_ids), len(data.retain_ids)
    first, second = run.stages([n_forget * params.poison_epochs, repair_passes(params, n_retain)])
    labels = random_labels(data.dataset, n_forget, np.random.default_rng(run.seed_for(DRAWS)))
    _fit(
        model,
        data,
        data.forget_ids,
        params,
        run,
        epochs=params.poison_epochs,
        lr=params.poison_lr,
        stage="poison",
        index=STAGE_1,
        progress=first,
        labels=labels,
    )
    _repair(model, data, params, run, second)
    return model


def overfit(
    model: nn.Module,
    data: UnlearnData,
    ids: np.ndarray,
    params: PruneParams,
    run: Run,
    *,
    lr: float,
    stage: str,
    index: int,
    progress: Progress | None,
) -> nn.Module:
    """A copy of `model` trained on `ids` until it reaches params.overfit_target accuracy there.

    Regression has no accuracy, so its copies train for all params.overfit_epochs.
    """
    twin = copy.deepcopy(model)

    def reached() -> bool:
        return accuracy(twin, data.dataset, ids, device=run.device) >= params.overfit_target

    _fit(
        twin,
        data,
        ids,
        params,
        run,
        epochs=params.overfit_epochs,
        lr=lr,
        stage=stage,
        index=index,
        progress=progress,
        until=None if data.dataset.task == "regression" else reached,
    )
    return twin


def compared(model: nn.Module, last_layer_only: bool) -> dict[str, nn.Parameter]:
    """The weight tensors selective pruning compares: all of rank >= 2, or the final linear layer's."""
    params = dict(model.named_parameters())
    if last_layer_only:
        final = final_linear(model).weight
        return {name: p for name, p in params.items() if p is final}
    return {name: p for name, p in params.items() if p.ndim >= 2}


def prune_masks(
    model: nn.Module, twins: list[nn.Module], quantile: float, last_layer_only: bool
) -> dict[str, torch.Tensor]:
    """Per compared tensor: the weights whose change towards every twin is below that change's quantile."""
    others = [dict(t.named_parameters()) for t in twins]
    masks = {}
    for name, weight in compared(model, last_layer_only).items():
        masks[name] = torch.stack(
            [lowest((weight.detach() - other[name].detach()).abs(), quantile) for other in others]
        ).all(0)
    return masks


def _selective_prune(
    model: nn.Module, data: UnlearnData, params: PruneParams, run: Run, last_layer_only: bool
) -> nn.Module:
    n_forget, n_retain = len(data.forget_ids), len(data.retain_ids)
    first, second = run.stages([n_forget * params.overfit_epochs, repair_passes(params, n_retain)])
    twin = overfit(
        model,
        data,
        data.forget_ids,
        params,
        run,
        lr=params.overfit_lr,
        stage="overfit_forget",
        index=STAGE_1,
        progress=first,
    )
    masks = prune_masks(model, [twin], params.quantile, last_layer_only)
    weights = dict(model.named_parameters())
    for name, mask in masks.items():
        reinit_where(weights[name], mask)
    _repair(model, data, params, run, second)
    return model


@register_method("prune")
def prune(model: nn.Module, data: UnlearnData, params: PruneParams, run: Run) -> nn.Module:
    """Re-initialise the weights that overfitting the forget set barely moved, in every weight tensor."""
    return _selective_prune(model, data, params, run, last_layer_only=False)


@register_method("prune_last_layer")
def prune_last_layer(
    model: nn.Module, data: UnlearnData, params: PruneLastLayerParams, run: Run
) -> nn.Module:
    """Selective pruning restricted to the final linear layer's weights."""
    return _selective_prune(model, data, params, run, last_layer_only=True)


@register_method("prune_complex")
def prune_complex(model: nn.Module, data: UnlearnData, params: PruneComplexParams, run: Run) -> nn.Module:
    """Re-initialise weights that neither the forget set nor a small retain sample needed to move."""
    sample = retain_sample(data, params.retain_fraction, np.random.default_rng(run.seed_for(DRAWS)))
    n_forget, n_retain = len(data.forget_ids), len(data.retain_ids)
    first, second, third = run.stages(
        [
            n_forget * params.overfit_epochs,
            len(sample) * params.overfit_epochs,
            repair_passes(params, n_retain),
        ]
    )
    forget_twin = overfit(
        model,
        data,
        data.forget_ids,
        params,
        run,
        lr=params.overfit_lr,
        stage="overfit_forget",
        index=STAGE_1,
        progress=first,
    )
    # The study wrote `0.01 // 3` here, which is 0.0: its retain copy never moved. Its intent is 0.01 / 3.
    retain_twin = overfit(
        model,
        data,
        sample,
        params,
        run,
        lr=params.retain_overfit_lr,
        stage="overfit_retain",
        index=STAGE_2,
        progress=second,
    )
    masks = prune_masks(model, [forget_twin, retain_twin], params.quantile, last_layer_only=False)
    weights = dict(model.named_parameters())
    for name, mask in masks.items():
        reinit_where(weights[name], mask)
    _repair(model, data, params, run, third)
    return model


def iter_convs(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    """Every Conv2d with its module name, in definition order."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            yield name, module


@contextmanager
def _conv_hooks(model: nn.Module, make: Callable[[str], Callable[..., None]]) -> Iterator[None]:
    """Forward hooks on every Conv2d for the duration of a block."""
    handles = [conv.register_forward_hook(make(name)) for name, conv in iter_convs(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def conv_activation_means(
    model: nn.Module, dataset: ArrayDataset, ids: np.ndarray, device: torch.device, batch_size: int
) -> dict[str, torch.Tensor]:
    """Mean output [C, H, W] of every Conv2d over the samples `ids` (eval mode)."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def add(_: nn.Module, __: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            total = out.float().sum(0)
            sums[name] = sums[name] + total if name in sums else total

        return add

    with _conv_hooks(model, hook):
        logits(model, dataset, ids, device=device, batch_size=batch_size)
    # The study divided these sums by the wrong count; a mean over samples divides by the number of samples.
    return {name: total / len(ids) for name, total in sums.items()}


def kernels_to_reset(
    forget_means: dict[str, torch.Tensor], retain_means: dict[str, torch.Tensor], threshold: float
) -> dict[str, torch.Tensor]:
    """Per conv: the output channels where more than `threshold` of positions are more active on forget."""
    return {
        name: (forget_means[name] > retain_means[name]).flatten(1).float().mean(1) > threshold
        for name in forget_means
    }


@register_method("activation_reset")
def activation_reset(
    model: nn.Module, data: UnlearnData, params: ActivationResetParams, run: Run
) -> nn.Module:
    """Re-initialise conv kernels that respond more to the forget set than to retain, and the final layer."""
    dataset = data.dataset
    rng = np.random.default_rng(run.seed_for(DRAWS))
    n = min(len(data.forget_ids), len(data.retain_ids))
    if n == 0:
        raise ValueError("activation_reset compares forget with retain activations and needs samples of both")
    sample = np.sort(rng.choice(data.retain_ids, size=n, replace=False))
    forget_means = conv_activation_means(model, dataset, data.forget_ids, run.device, params.batch_size)
    run.check()
    retain_means = conv_activation_means(model, dataset, sample, run.device, params.batch_size)
    run.check()
    masks = kernels_to_reset(forget_means, retain_means, params.threshold)
    for name, conv in iter_convs(model):
        reinit_where(conv.weight, masks[name].view(-1, 1, 1, 1).expand_as(conv.weight))
    final_linear(model).reset_parameters()
    _repair(model, data, params, run, run.progress)
    return model
