"""Where an unlearned group still differs from its references: the forget samples split by how hard they are.

epsilon-hat says how separable the two groups are, sample by sample, and takes the median; it does not say
which samples keep the trace. Here the forget samples are ordered by the references' mean statistic (the
hinge: low where models retrained without a sample get it wrong, high where they get it right anyway) and
cut into `bins` groups of as equal size as they can be, hardest first. Each group gives both groups' mean
statistic and mean per-sample std, and the gap: the mean over its samples of (unlearned mean - reference
mean) / reference std, the per-sample distance the likelihood-ratio test sees, in the references' units.

A method that removes a uniform share of the trace leaves gaps that fall from hard to easy as the original's
do; one that has removed what generalisation would also have given back leaves gaps near 0 on the easy end
and whatever it missed on the hard one (docs/target.md, "Where the trace is left").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DifficultyBin:
    """One group of forget samples, ordered by the references' mean statistic (bin 0 the hardest)."""

    n_samples: int
    reference_mean: float
    reference_std: float
    unlearned_mean: float
    unlearned_std: float
    gap: float
    """Mean over the group's samples of (unlearned mean - reference mean) / reference std; a sample whose
    references all agree (std 0) counts with the group's mean reference std instead, or with 1 when every
    sample of the group has std 0."""

    def to_json(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def by_difficulty(reference: np.ndarray, unlearned: np.ndarray, bins: int = 5) -> list[DifficultyBin]:
    """[models, samples] statistics of the references and of the unlearned models (the same samples, in the
    same order) as `bins` groups of samples, hardest first by the references' mean."""
    reference = np.asarray(reference, dtype=np.float64)
    unlearned = np.asarray(unlearned, dtype=np.float64)
    if reference.ndim != 2 or unlearned.ndim != 2 or reference.shape[1] != unlearned.shape[1]:
        raise ValueError(
            f"expected [models, samples] arrays over the same samples, got {reference.shape} and {unlearned.shape}"
        )
    n = reference.shape[1]
    if not 1 <= bins <= n:
        raise ValueError(f"bins must be between 1 and the number of samples ({n}), got {bins}")
    ref_mean, ref_std = reference.mean(0), reference.std(0)
    out_mean, out_std = unlearned.mean(0), unlearned.std(0)
    order = np.argsort(ref_mean, kind="stable")
    groups = []
    for part in np.array_split(order, bins):
        scale = ref_std[part]
        fallback = scale.mean()
        scale = np.where(scale > 0, scale, fallback if fallback > 0 else 1.0)
        groups.append(
            DifficultyBin(
                n_samples=len(part),
                reference_mean=float(ref_mean[part].mean()),
                reference_std=float(ref_std[part].mean()),
                unlearned_mean=float(out_mean[part].mean()),
                unlearned_std=float(out_std[part].mean()),
                gap=float(((out_mean[part] - ref_mean[part]) / scale).mean()),
            )
        )
    return groups
