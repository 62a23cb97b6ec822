"""CIFAR-10 from torchvision's on-disk python format in a user's folder (never downloaded).

Trust: the batches are Python pickles. They are read from the user's own folder, and with an
unpickler that can build only dicts, lists, strings, numbers and uint8 NumPy arrays (any other
class or function reference in the file is refused), then checked for the expected structure.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ml.data.base import ArrayDataset, DatasetError, register_dataset

BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
"""The study's normalisation (its cifar10_base_transform)."""

# The array rebuild function, whichever numpy module (numpy.core or numpy._core) the pickle names.
_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the names a CIFAR-10 batch needs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of a CIFAR-10 batch"
            ) from None


def _read_pickle(path: Path) -> dict[str, Any]:
    """Unpickle one batch file (Python 2 pickles, hence latin1) and normalise its keys to str."""
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 file {path.name} is missing from {path.parent}")
    try:
        with path.open("rb") as f:
            obj = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as exc:
        raise DatasetError(f"CIFAR-10 file {path.name} is not a readable CIFAR-10 pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR-10 file {path.name} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 3, 32, 32] uint8 and labels [n] int64 of one batch, after structural checks."""
    batch = _read_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"CIFAR-10 file {path.name}: 'data' must be a uint8 array [n, 3072], got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"CIFAR-10 file {path.name}: 'labels' is not a list of integers") from exc
    if y.shape != (data.shape[0],):
        raise DatasetError(f"CIFAR-10 file {path.name}: {y.size} labels for {data.shape[0]} images")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetError(f"CIFAR-10 file {path.name}: labels must lie in 0..9")
    return data.reshape(-1, 3, 32, 32), y


def _read_label_names(path: Path) -> list[str]:
    names = _read_pickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DatasetError(f"CIFAR-10 file {path.name}: 'label_names' must be a list of 10 names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def find_batch_dir(root: Path) -> Path:
    """Accept the folder that contains cifar-10-batches-py/ or that folder itself."""
    for candidate in (root / BATCH_DIR, root):
        if (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    raise DatasetError(
        f"no CIFAR-10 batches under {root}: expected {root / BATCH_DIR}/data_batch_1 (torchvision's "
        "python format, as unpacked from cifar-10-python.tar.gz) or data_batch_1 directly in the folder"
    )


@register_dataset(
    "cifar10",
    description=(
        "CIFAR-10 from a folder in torchvision's python format (cifar-10-batches-py); 50,000 train / "
        "10,000 test 32x32 RGB; ids = torchvision CIFAR10(train=True) order (data_batch_1..5 concatenated)"
    ),
)
def load_cifar10(root: Path) -> ArrayDataset:
    """Order: data_batch_1..data_batch_5 concatenated, rows in file order, i.e. torchvision CIFAR10(train=True).

    This is the order the study's forget_set.txt ids index. Test split: test_batch in file order.
    """
    folder = find_batch_dir(root)
    parts = [_read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = _read_batch(folder / TEST_FILE)
    return ArrayDataset(
        name="cifar10",
        train_x=np.concatenate([x for x, _ in parts]),
        train_y=np.concatenate([y for _, y in parts]),
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        mean=MEAN,
        std=STD,
        classes=_read_label_names(folder / META_FILE),
        autoaugment="cifar10",
    )
