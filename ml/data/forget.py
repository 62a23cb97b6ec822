"""Seeded forget-set drawing: ids are training-split indices, always returned sorted as int64.

A size is given either as `fraction` of the training split (rounded to the nearest whole sample) or as
an exact `count`. The same (inputs, seed) always draws the same ids, on any machine, because every
draw uses numpy's default_rng(seed) (PCG64), whose stream numpy keeps stable across versions.
"""

from __future__ import annotations

import numpy as np


def _target_size(n: int, fraction: float | None, count: int | None) -> int:
    """Turn fraction-or-count into a sample count that leaves both forget and retain sets non-empty."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction or count")
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        count = round(fraction * n)
    assert count is not None
    if not 0 < count < n:
        raise ValueError(f"a forget set of {count} samples out of {n} leaves the forget or retain set empty")
    return int(count)


def random_forget_ids(
    n_train: int, *, fraction: float | None = None, count: int | None = None, seed: int = 0
) -> np.ndarray:
    """Uniform random forget set: default_rng(seed).choice(n_train, size, replace=False), sorted."""
    size = _target_size(n_train, fraction, count)
    ids = np.random.default_rng(seed).choice(n_train, size=size, replace=False)
    return np.sort(ids).astype(np.int64)


def group_exclusive_forget_ids(
    groups: np.ndarray, *, fraction: float | None = None, count: int | None = None, seed: int = 0
) -> np.ndarray:
    """Forget set made of whole groups (e.g. AgeDB subjects), so no group is split between forget and retain.

    Rule: the distinct group values, in sorted order, are shuffled with default_rng(seed); walking that
    order, a group is taken when it still fits (running total + its size <= target) and skipped
    otherwise, stopping as soon as the target is met. The result never exceeds the target and is
    below it only when no combination met along the way fits exactly.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError("groups must be a non-empty 1-D array with one entry per training sample")
    target = _target_size(groups.size, fraction, count)
    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    chosen = np.zeros(sizes.size, dtype=bool)
    total = 0
    for g in np.random.default_rng(seed).permutation(sizes.size):
        if total + sizes[g] <= target:
            chosen[g] = True
            total += int(sizes[g])
            if total == target:
                break
    if total == 0:
        raise ValueError(f"every group has more than {target} samples: no whole group fits the forget set")
    return np.flatnonzero(chosen[inverse]).astype(np.int64)


def class_forget_ids(labels: np.ndarray, cls: int) -> np.ndarray:
    """Every training sample of one class (class-wise unlearning)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "labels must be a 1-D integer array (class-wise forgetting needs a classification set)"
        )
    ids = np.flatnonzero(labels == cls).astype(np.int64)
    if ids.size == 0:
        raise ValueError(f"class {cls} has no training samples")
    if ids.size == labels.size:
        raise ValueError(f"every training sample is of class {cls}: the retain set would be empty")
    return ids
