"""Fixtures of the method tests: a small digits set and a width-8 model trained on all of it (module-scoped:
each test module trains its own)."""

from __future__ import annotations

import pytest
import torch

from ml.data import ArrayDataset, load_dataset
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import train
from tests.unit.test_methods import subset

ARCH = ArchSpec(width=8)
RECIPE = Recipe(epochs=8, batch_size=32, lr=0.05, schedule="cosine")


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    """400 training and 100 test images of digits (a module may define its own)."""
    return subset(load_dataset("digits"), 400, 100)


@pytest.fixture(scope="module")
def trained(digits: ArrayDataset) -> torch.nn.Module:
    """A model that fits its training set, forget samples included, as a service model would."""
    torch.manual_seed(0)
    model = build_model(ARCH, 10, 1)
    train(model, digits, None, RECIPE, seed=1)
    return model
