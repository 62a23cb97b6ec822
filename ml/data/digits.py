"""scikit-learn's embedded 8x8 digits: real data with no download, for the embedded default and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.data.base import ArrayDataset, register_dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@register_dataset(
    "digits",
    description="scikit-learn's 1,797 handwritten 8x8 digits; fixed seeded 80/20 split, ids = rows of the train split",
    needs_root=False,
)
def load_digits(root: Path | None = None) -> ArrayDataset:
    """Order: sklearn.datasets.load_digits() rows, permuted by numpy default_rng(0); first 20% are the test split."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = round(len(labels) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    x = images[train].astype(np.float32) / 255.0
    return ArrayDataset(
        name="digits",
        train_x=images[train],
        train_y=labels[train],
        test_x=images[test],
        test_y=labels[test],
        num_classes=10,
        mean=(float(x.mean()),),
        std=(float(x.std()),),
        classes=[str(i) for i in range(10)],
    )
