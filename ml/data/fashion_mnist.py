"""Fashion-MNIST from its IDX files (gzip or plain), parsed with NumPy; Debian's dataset-fashion-mnist ships them."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ml.data.base import ArrayDataset, DatasetError, register_dataset

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MEAN = (0.2860,)
STD = (0.3530,)
"""Pixel mean/std of the 60,000 training images on the [0, 1] scale."""

_UBYTE = 0x08


def _read_bytes(folder: Path, name: str) -> tuple[str, bytes]:
    """Read name.gz, else the uncompressed name; returns the file name used and its decompressed bytes."""
    for fname, opener in ((name + ".gz", gzip.open), (name, open)):
        path = folder / fname
        if path.is_file():
            try:
                with opener(path, "rb") as f:
                    return fname, f.read()
            except (OSError, EOFError) as exc:
                raise DatasetError(f"Fashion-MNIST file {fname} cannot be read: {exc}") from exc
    raise DatasetError(f"Fashion-MNIST file {name}.gz (or {name}) is missing from {folder}")


def read_idx(folder: Path, name: str, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian int32 sizes, then the data."""
    fname, raw = _read_bytes(folder, name)
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0:2] != b"\x00\x00" or raw[2] != _UBYTE or raw[3] != ndim:
        raise DatasetError(
            f"Fashion-MNIST file {fname}: bad IDX magic {raw[:4].hex()}, expected 000008{ndim:02x} "
            f"(unsigned bytes, {ndim} dimensions)"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise DatasetError(
            f"Fashion-MNIST file {fname}: header says {dims} = {int(np.prod(dims))} bytes of data, "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = FILES[split]
    images = read_idx(folder, images_name, 3)
    labels = read_idx(folder, labels_name, 1).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"Fashion-MNIST {split} split: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(f"Fashion-MNIST {split} split: labels must lie in 0..9")
    return images[:, None, :, :].copy(), labels


@register_dataset(
    "fashion_mnist",
    description=(
        "Fashion-MNIST from its IDX .gz files; 60,000 train / 10,000 test 28x28 grayscale; "
        "ids = rows of train-images-idx3-ubyte in file order"
    ),
    default_root=DEFAULT_ROOT,
)
def load_fashion_mnist(root: Path) -> ArrayDataset:
    """Order: images as stored in train-images-idx3-ubyte(.gz), sample id i = the i-th image; test likewise."""
    if not root.is_dir():
        raise DatasetError(
            f"Fashion-MNIST folder {root} does not exist (Debian/Ubuntu: apt-get install dataset-fashion-mnist "
            f"provides {DEFAULT_ROOT})"
        )
    train_x, train_y = _read_split(root, "train")
    test_x, test_y = _read_split(root, "test")
    return ArrayDataset(
        name="fashion_mnist",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        mean=MEAN,
        std=STD,
        classes=list(CLASSES),
    )
