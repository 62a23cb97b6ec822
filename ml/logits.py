"""Model outputs on chosen samples, and the accuracies (or regression errors) every evaluation starts from.

Outputs are computed in eval mode, in float32, batch by batch; on CUDA with cudnn autotuning and TF32 off so
the same model and samples always give the same numbers (membership-inference metrics compare them). Each
batch goes to CUDA through pinned memory without blocking the host, which reads the outputs once, at the end.
For regression data sets, `evaluate` reports mean absolute errors in the targets' original units
(retain_mae, forget_mae, test_mae) and sets the *_accuracy keys to None.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from ml.augment import Normalizer
from ml.data.base import ArrayDataset
from ml.trainer import resolve_device, to_device

if TYPE_CHECKING:
    from ml.methods.base import UnlearnData

Split = Literal["train", "test"]


def _split(dataset: ArrayDataset, split: Split) -> tuple[np.ndarray, np.ndarray]:
    if split == "train":
        return dataset.train_x, dataset.train_y
    if split == "test":
        return dataset.test_x, dataset.test_y
    raise ValueError(f"unknown split {split!r}; valid: train, test")


def _rows(x: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    if ids is None:
        return np.arange(len(x), dtype=np.int64)
    rows = np.asarray(ids, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= len(x))):
        raise ValueError(f"ids must be a 1-D array of row ids in [0, {len(x)})")
    return rows


def logits(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    *,
    split: Split = "train",
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """float32 [n, C] outputs of `model` (moved to `device`) on rows `ids` of a split (None = all).

    `progress` hears the fraction of rows done after each batch (one host sync each, so only when asked).
    """
    x, _ = _split(dataset, split)
    rows = _rows(x, ids)
    dev = resolve_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    normalise = Normalizer(dataset.mean, dataset.std, dev)
    cudnn = (
        torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False)
        if dev.type == "cuda"
        else nullcontext()
    )
    outs: list[torch.Tensor] = []
    try:
        with torch.inference_mode(), cudnn:
            for start in range(0, len(rows), batch_size):
                xb = to_device(torch.from_numpy(x[rows[start : start + batch_size]]), dev)
                outs.append(model(normalise(xb)).float())
                if progress is not None:
                    progress(min(1.0, (start + batch_size) / len(rows)))
    finally:
        model.train(was_training)
    if not outs:
        return np.zeros((0, _width(model, dataset)), dtype=np.float32)
    return torch.cat(outs).cpu().numpy()


def _width(model: nn.Module, dataset: ArrayDataset) -> int:
    """Output width without running the model: the last linear layer's, else the data set's class count."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else dataset.num_classes


def predict(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    *,
    split: Split = "train",
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> np.ndarray:
    """Predicted class indices (int64), or regression predictions in the targets' original units (float32)."""
    out = logits(model, dataset, ids, split=split, device=device, batch_size=batch_size)
    if dataset.task == "regression":
        return (out[:, 0] * np.float32(dataset.target_scale)).astype(np.float32)
    return out.argmax(axis=1).astype(np.int64)


def scored_outputs(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    *,
    split: Split = "train",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """What epsilon-hat scores a model by (ml.metrics.epsilon.statistic): logits [n, C] for a classifier,
    predictions in the targets' units [n] for a regressor."""
    if dataset.task == "regression":
        return predict(model, dataset, ids, split=split, device=device)
    return logits(model, dataset, ids, split=split, device=device)


def _targets(dataset: ArrayDataset, ids: np.ndarray | None, split: Split) -> np.ndarray:
    _, y = _split(dataset, split)
    return y[_rows(y, ids)]


def accuracy(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    *,
    split: Split = "train",
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> float:
    """Share of rows `ids` classified correctly; ValueError for regression or no rows (undefined)."""
    if dataset.task == "regression":
        raise ValueError("accuracy is undefined for a regression data set; use mae")
    truth = _targets(dataset, ids, split)
    if truth.size == 0:
        raise ValueError("accuracy of an empty set of samples is undefined")
    pred = predict(model, dataset, ids, split=split, device=device, batch_size=batch_size)
    return float(np.mean(pred == truth))


def mae(
    model: nn.Module,
    dataset: ArrayDataset,
    ids: np.ndarray | None,
    *,
    split: Split = "train",
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> float:
    """Mean absolute error of a regression model on rows `ids`, in the targets' original units."""
    if dataset.task != "regression":
        raise ValueError("mae is for regression data sets; use accuracy")
    truth = _targets(dataset, ids, split).astype(np.float64)
    if truth.size == 0:
        raise ValueError("mae of an empty set of samples is undefined")
    pred = predict(model, dataset, ids, split=split, device=device, batch_size=batch_size)
    return float(np.mean(np.abs(pred - truth)))


def evaluate(
    model: nn.Module, data: UnlearnData, *, device: str | torch.device = "cpu", batch_size: int = 512
) -> dict[str, float | None]:
    """Accuracy on retain, forget and test, None for an empty set; regression: *_mae, accuracies None."""
    dataset = data.dataset
    sets: dict[str, tuple[np.ndarray, Split]] = {
        "retain": (data.retain_ids, "train"),
        "forget": (data.forget_ids, "train"),
        "test": (np.arange(dataset.n_test), "test"),
    }
    regression = dataset.task == "regression"
    score_fn = mae if regression else accuracy
    out: dict[str, float | None] = {}
    for name, (ids, split) in sets.items():
        score = (
            score_fn(model, dataset, ids, split=split, device=device, batch_size=batch_size)
            if len(ids)
            else None
        )
        out[f"{name}_accuracy"] = None if regression else score
        if regression:
            out[f"{name}_mae"] = score
    return out
