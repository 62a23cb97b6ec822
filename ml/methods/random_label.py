"""Amnesiac unlearning (Graves et al. 2021): retain mixed with the forget set under wrong labels.

Each method receives a private copy of the model from run() and may change it in place.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ml.data.base import ArrayDataset
from ml.methods.base import Run, UnlearnData, register_method
from ml.methods.loops import _fit
from ml.methods.params import RandomLabelParams
from ml.methods.study import DRAWS, STAGE_1, random_labels


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
