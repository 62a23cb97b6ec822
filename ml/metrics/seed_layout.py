"""Reader of the "Forget with Precision" study's published folder layout (its "seed layout").

    logits_retain.npy               [n, M + 1, C]: slot 0 the one-hot true label, slots 1..M reference models
    metrics.csv                     seed,retain_accuracy,forget_accuracy,test_accuracy of the reference models
    <approach>/logits_unlearn.npy   [n, M + 1, C]: the same layout for the unlearned models
    <approach>/metrics.csv          accuracies of the unlearned models

Arrays come back in our layout: logits [models, samples, classes] and labels [samples]. The approach
`baseline` is not a folder of logits: it splits the reference models of logits_retain.npy into two halves,
slots 1..M/2 as "reference" and the rest as "unlearned" (the study's 1..40 vs 41..80 for M = 80), the floor
that no attack should beat; both groups get the accuracies of baseline/metrics.csv when present, else of
metrics.csv.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASELINE = "baseline"
RETAIN_FILE = "logits_retain.npy"
UNLEARN_FILE = "logits_unlearn.npy"
METRICS_FILE = "metrics.csv"
METRIC_COLUMNS = ("retain_accuracy", "forget_accuracy", "test_accuracy")


class SeedLayoutError(ValueError):
    """The folder does not follow the seed layout: missing file, unknown approach, malformed array or table."""


@dataclass(frozen=True, eq=False)
class ModelAccuracies:
    """Per-model accuracies from a metrics.csv, one entry per model, in file order."""

    retain: np.ndarray
    forget: np.ndarray
    test: np.ndarray

    def means(self) -> dict[str, float]:
        """Mean accuracy per split, as the study's Table 1 reports them."""
        return {
            "retain_accuracy": float(self.retain.mean()),
            "forget_accuracy": float(self.forget.mean()),
            "test_accuracy": float(self.test.mean()),
        }


@dataclass(frozen=True, eq=False)
class SeedApproach:
    """One approach of a seed folder, ready for epsilon-hat: both groups' logits, labels and accuracies."""

    name: str
    reference_logits: np.ndarray
    """[M_r, n, C] logits of the reference (retrained) models."""
    unlearned_logits: np.ndarray
    """[M_u, n, C] logits of the unlearned models."""
    labels: np.ndarray
    """[n] true class of each forget sample."""
    reference_accuracy: ModelAccuracies | None
    unlearned_accuracy: ModelAccuracies | None


def split_seed_array(array: np.ndarray, source: str = "array") -> tuple[np.ndarray, np.ndarray]:
    """Split a seed-layout array [n, M + 1, C] into logits [M, n, C] and labels [n] from the one-hot slot 0."""
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 2 or array.shape[2] < 2:
        raise SeedLayoutError(
            f"{source}: expected [samples, 1 + models, classes] with at least one model and two classes, "
            f"got shape {array.shape}"
        )
    one_hot = array[:, 0, :]
    if not (np.isin(one_hot, (0, 1)).all() and (one_hot.sum(axis=1) == 1).all()):
        raise SeedLayoutError(f"{source}: slot 0 of every sample must be the one-hot true label")
    return np.moveaxis(array[:, 1:, :], 1, 0), one_hot.argmax(axis=1)


def read_seed_logits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one seed-layout .npy file as logits [M, n, C] and labels [n]."""
    if not path.is_file():
        raise SeedLayoutError(f"{path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SeedLayoutError(f"{path}: not a readable .npy array ({exc})") from exc
    return split_seed_array(array, str(path))


def read_metrics(path: Path) -> ModelAccuracies:
    """Read a metrics.csv (seed, retain_accuracy, forget_accuracy, test_accuracy) into per-model arrays."""
    if not path.is_file():
        raise SeedLayoutError(f"{path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in METRIC_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SeedLayoutError(f"{path}: missing columns {', '.join(missing)}")
        try:
            rows = [[float(row[c]) for c in METRIC_COLUMNS] for row in reader]
        except (TypeError, ValueError) as exc:
            raise SeedLayoutError(f"{path}: non-numeric accuracy ({exc})") from exc
    if not rows:
        raise SeedLayoutError(f"{path}: no rows")
    table = np.asarray(rows)
    return ModelAccuracies(retain=table[:, 0], forget=table[:, 1], test=table[:, 2])


def list_approaches(seed_dir: Path) -> list[str]:
    """Approaches of a seed folder: `baseline` first (whenever logits_retain.npy exists), then the others sorted."""
    if not seed_dir.is_dir():
        raise SeedLayoutError(f"{seed_dir}: no such folder")
    found = sorted(p.name for p in seed_dir.iterdir() if p.name != BASELINE and (p / UNLEARN_FILE).is_file())
    return ([BASELINE] if (seed_dir / RETAIN_FILE).is_file() else []) + found


def load_approach(seed_dir: Path, name: str) -> SeedApproach:
    """Load one approach of a seed folder (see the module docstring for `baseline`)."""
    approaches = list_approaches(seed_dir)
    if name not in approaches:
        known = ", ".join(approaches) or "none"
        raise SeedLayoutError(f"unknown approach {name!r} in {seed_dir} (known: {known})")
    reference, labels = read_seed_logits(seed_dir / RETAIN_FILE)
    reference_accuracy = _optional_metrics(seed_dir / METRICS_FILE)
    if name == BASELINE:
        if reference.shape[0] < 2:
            raise SeedLayoutError(
                f"{seed_dir / RETAIN_FILE}: the baseline needs at least two reference models"
            )
        half = reference.shape[0] // 2
        accuracy = _optional_metrics(seed_dir / BASELINE / METRICS_FILE) or reference_accuracy
        return SeedApproach(name, reference[:half], reference[half:], labels, accuracy, accuracy)
    unlearned, unlearned_labels = read_seed_logits(seed_dir / name / UNLEARN_FILE)
    if unlearned.shape[1:] != reference.shape[1:]:
        raise SeedLayoutError(
            f"{name}: unlearned logits cover {unlearned.shape[1]} samples x {unlearned.shape[2]} classes but the "
            f"reference logits {reference.shape[1]} x {reference.shape[2]}"
        )
    if not np.array_equal(unlearned_labels, labels):
        raise SeedLayoutError(f"{name}: the label slot differs from logits_retain.npy's")
    return SeedApproach(
        name,
        reference,
        unlearned,
        labels,
        reference_accuracy,
        _optional_metrics(seed_dir / name / METRICS_FILE),
    )


def _optional_metrics(path: Path) -> ModelAccuracies | None:
    """Accuracies of a metrics.csv, or None when the file is absent (a malformed file is still an error)."""
    return read_metrics(path) if path.is_file() else None
