"""Data set container and registry: every loader returns an ArrayDataset of uint8 images in a documented order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Task = Literal["classification", "regression"]


class DatasetError(ValueError):
    """A data set cannot be loaded: unknown name, missing folder, malformed files."""


@dataclass
class ArrayDataset:
    """A whole data set held in memory; a sample id is the row index in the training split.

    Images are uint8 [N, C, H, W]; labels are int64 class indices (classification) or float32
    targets (regression). mean/std are per-channel, on the [0, 1] scale, for normalisation.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    task: Task = "classification"
    classes: list[str] = field(default_factory=list)
    train_groups: np.ndarray | None = None
    """Optional per-training-sample group (e.g. the person in AgeDB), for group-exclusive forget sets."""
    autoaugment: str | None = None
    """torchvision AutoAugment policy the study used for this data set ("cifar10", "imagenet"), if any."""
    target_scale: float = 1.0
    """For regression: targets are divided by this before training and multiplied back after."""

    def __post_init__(self) -> None:
        # NumPy calls an array with a size-1 axis contiguous whatever that axis's stride, and keeps
        # odd strides there (digits comes out as (64, 1, 8, 1)). Tensors made from such arrays send
        # oneDNN's convolution backward down a slow and, with one thread, heap-corrupting path, so
        # every data set gets canonical C strides here, once, whatever its loader did.
        self.train_x = _canonical(self.train_x)
        self.test_x = _canonical(self.test_x)

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_x.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def summary(self) -> dict[str, Any]:
        """Facts the service stores when the data set is registered."""
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "task": self.task,
            "classes": list(self.classes),
        }


def _canonical(x: np.ndarray) -> np.ndarray:
    """x with standard C strides on every axis, size-1 axes included (a copy only when needed)."""
    expected = tuple(int(np.prod(x.shape[i + 1 :])) * x.itemsize for i in range(x.ndim))
    return x if x.strides == expected else x.copy(order="C")


Loader = Callable[..., ArrayDataset]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Loader
    description: str
    default_root: str | None
    needs_root: bool


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str, *, description: str, default_root: str | None = None, needs_root: bool = True
) -> Callable[[Loader], Loader]:
    """Register a loader under a name; loaders are called as loader(root: Path | None, **options)."""

    def wrap(fn: Loader) -> Loader:
        if name in DATASETS:
            raise ValueError(f"data set {name!r} is registered twice")
        DATASETS[name] = DatasetSpec(name, fn, description, default_root, needs_root)
        return fn

    return wrap


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> ArrayDataset:
    """Load a registered data set by name; fails loudly with the valid names on an unknown one."""
    from ml import data as _  # noqa: F401  (registers the built-in loaders)

    spec = DATASETS.get(name)
    if spec is None:
        raise DatasetError(f"unknown data set {name!r}; valid: {', '.join(sorted(DATASETS))}")
    if root is None:
        root = spec.default_root
    if spec.needs_root and root is None:
        raise DatasetError(f"data set {name!r} needs a folder (root)")
    return spec.loader(Path(root) if root is not None else None, **options)
