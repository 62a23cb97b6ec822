"""A user's own images, one folder per class, read in torchvision ImageFolder order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ml.data.base import ArrayDataset, DatasetError, register_dataset

SPLIT_SEED = 0


def _classes(folder: Path) -> dict[str, int]:
    """ImageFolder's classes: the subfolder names, sorted, numbered from 0."""
    from torchvision.datasets.folder import find_classes  # lazy: importing torchvision takes seconds

    try:
        return find_classes(folder)[1]
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DatasetError(
            f"image folder {folder}: {exc} (expected one subfolder of images per class)"
        ) from exc


def _samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """ImageFolder's listing: classes in name order, files sorted within each class (subfolders walked sorted)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        return make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:
        raise DatasetError(f"image folder {folder}: {exc}") from exc


def _load_images(paths: list[str], size: int) -> np.ndarray:
    """RGB uint8 [N, 3, size, size], bilinear-resized, in the given order."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def fill(i: int) -> None:
        try:
            with Image.open(paths[i]) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"image {paths[i]} cannot be decoded: {exc}") from exc
        out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std on the [0, 1] scale, summed in chunks so large sets need no float copy."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        squares += (part**2).sum(axis=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class (in class order) draw round(n_c * test_fraction) test samples with one default_rng(seed).

    Returns sorted (train, test) indices, so training ids keep ImageFolder order.
    """
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_test = round(members.size * test_fraction)
        test.append(members[rng.permutation(members.size)[:n_test]])
    is_test = np.zeros(labels.size, dtype=bool)
    if test:
        is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@register_dataset(
    "image_folder",
    description=(
        "your own images, one subfolder per class (torchvision ImageFolder order: classes sorted, files sorted); "
        "train/ + test/ subfolders if present, else a seeded per-class split; ids = training images in that order"
    ),
)
def load_image_folder(
    root: Path, image_size: int = 32, test_fraction: float = 0.2, split_seed: int = SPLIT_SEED
) -> ArrayDataset:
    """Order: ImageFolder's (classes sorted by name, files sorted within each class, subfolders walked sorted).

    If root has both train/ and test/ folders, each holds the class folders and the ids are train/'s
    images in that order (test classes must exist in train/). Otherwise root holds the class folders and
    stratified_split(labels, test_fraction, split_seed) moves round(n_c * test_fraction) images of each
    class to the test split; sample id i = the i-th remaining image in ImageFolder order. Images are
    converted to RGB and resized to image_size squared; mean/std are measured on the training images.
    """
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    if not 8 <= image_size <= 512:
        raise DatasetError(f"image_size must lie in 8..512, got {image_size}")
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_to_idx = _classes(root / "train")
        test_classes = _classes(root / "test")
        unknown = sorted(set(test_classes) - set(class_to_idx))
        if unknown:
            raise DatasetError(f"image folder {root}: test/ has classes {unknown} that train/ lacks")
        train_samples = _samples(root / "train", class_to_idx)
        test_samples = _samples(root / "test", {c: class_to_idx[c] for c in test_classes})
        samples = train_samples + test_samples
        train = np.arange(len(train_samples))
        test = np.arange(len(train_samples), len(samples))
    else:
        class_to_idx = _classes(root)
        samples = _samples(root, class_to_idx)
        train, test = stratified_split(np.asarray([y for _, y in samples]), test_fraction, split_seed)
    if train.size == 0:
        raise DatasetError(f"image folder {root}: the training split is empty")
    images = _load_images([p for p, _ in samples], image_size)
    labels = np.asarray([y for _, y in samples], dtype=np.int64)
    mean, std = _channel_stats(images[train])
    return ArrayDataset(
        name="image_folder",
        train_x=images[train],
        train_y=labels[train],
        test_x=images[test],
        test_y=labels[test],
        num_classes=len(class_to_idx),
        mean=mean,
        std=std,
        classes=list(class_to_idx),
    )
