"""Straightforward loop version of epsilon-hat, one sample and one value at a time, to check the vectorised one.

It follows the seven steps of the definition literally, with scipy.stats.norm.pdf and
sklearn.metrics.det_curve, and the same documented rules as ml.metrics.epsilon for what those two cannot
do: a zero-std fit is a point mass, an undefined ratio scores 1, and since det_curve rejects infinite
scores it is given their dense ranks instead (the same order and the same ties, so the same curve).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm
from sklearn.metrics import det_curve

LOG_OFFSET = 1e-8


def hinge_loop(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """z_y - max_{c != y} z_c for each model and sample: [M, n, C], [n] -> [M, n]."""
    m, n, c = logits.shape
    out = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            y = int(labels[j])
            out[i, j] = float(logits[i, j, y]) - max(float(logits[i, j, k]) for k in range(c) if k != y)
    return out


def density(x: float, mean: float, std: float) -> float:
    """Gaussian density, with std 0 the point mass: +inf at the mean, 0 elsewhere."""
    if std == 0:
        return math.inf if x == mean else 0.0
    return float(norm.pdf(x, mean, std))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator with IEEE rules; 0/0 and inf/inf are undefined and score 1."""
    with np.errstate(all="ignore"):
        value = float(np.float64(numerator) / np.float64(denominator))
    return 1.0 if math.isnan(value) else value


def sample_scores(ref: np.ndarray, unl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-3 for one sample: likelihood-ratio scores of its reference and unlearned values."""
    ref_mean, ref_std = ref.mean(), ref.std()
    unl_mean, unl_std = unl.mean(), unl.std()
    ref_scores = np.array([ratio(density(x, unl_mean, unl_std), density(x, ref_mean, ref_std)) for x in ref])
    unl_scores = np.array([ratio(density(x, unl_mean, unl_std), density(x, ref_mean, ref_std)) for x in unl])
    return ref_scores, unl_scores


def epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> float:
    """Step 6 as the study writes it."""
    if ((fpr == 0) & (fnr == 0)).any():
        return math.inf
    one_zero = (fpr == 0) ^ (fnr == 0)
    fpr, fnr = fpr[~one_zero], fnr[~one_zero]
    with np.errstate(all="ignore"):
        eps = np.concatenate(
            [
                np.log(1 - delta - fpr + LOG_OFFSET) - np.log(fnr + LOG_OFFSET),
                np.log(1 - delta - fnr + LOG_OFFSET) - np.log(fpr + LOG_OFFSET),
            ]
        )
    if eps.size == 0 or np.isnan(eps).all():
        return math.nan
    return float(np.nanmax(eps))


def det_rates(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 5: sklearn's DET curve of the scores, given as dense ranks because det_curve rejects infinities."""
    ranks = np.unique(scores, return_inverse=True)[1].astype(np.float64)
    fpr, fnr, _ = det_curve(positive.astype(int), ranks)
    return fpr, fnr


def sample_epsilon(ref: np.ndarray, unl: np.ndarray, delta: float) -> float:
    """Steps 2-6 for one sample, positive class labelled by group membership (right for any group sizes)."""
    ref_scores, unl_scores = sample_scores(ref, unl)
    unlearned_positive = not np.median(ref_scores) > np.median(unl_scores)
    scores = np.concatenate([ref_scores, unl_scores])
    is_unlearned = np.concatenate([np.zeros(ref.size, bool), np.ones(unl.size, bool)])
    fpr, fnr = det_rates(scores, is_unlearned == unlearned_positive)
    return epsilon_from_rates(fpr, fnr, delta)


def per_sample_epsilons_loop(reference: np.ndarray, unlearned: np.ndarray, delta: float) -> np.ndarray:
    """Per-sample epsilons from statistics [M_r, n] and [M_u, n], one sample at a time."""
    return np.array(
        [sample_epsilon(reference[:, j], unlearned[:, j], delta) for j in range(reference.shape[1])]
    )


def study_labelled_epsilons(reference: np.ndarray, unlearned: np.ndarray, delta: float) -> np.ndarray:
    """The study's own labelling: the higher-median group first, then y_true = M_r zeros and M_u ones.

    Right only when M_r == M_u; kept to show that ours agrees with it exactly then.
    """
    out = []
    for j in range(reference.shape[1]):
        ref_scores, unl_scores = sample_scores(reference[:, j], unlearned[:, j])
        if np.median(ref_scores) > np.median(unl_scores):
            scores = np.concatenate([unl_scores, ref_scores])
        else:
            scores = np.concatenate([ref_scores, unl_scores])
        y_true = np.concatenate([np.zeros(ref_scores.size, bool), np.ones(unl_scores.size, bool)])
        fpr, fnr = det_rates(scores, y_true)
        out.append(epsilon_from_rates(fpr, fnr, delta))
    return np.array(out)


def epsilon_hat_loop(reference: np.ndarray, unlearned: np.ndarray, delta: float) -> float:
    """Step 7: median over samples, NaN ignored, infinities counted."""
    eps = per_sample_epsilons_loop(reference, unlearned, delta)
    eps = eps[~np.isnan(eps)]
    return float(np.median(eps)) if eps.size else math.nan
