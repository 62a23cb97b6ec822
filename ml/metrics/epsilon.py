"""Epsilon-hat: how well the best threshold attack tells unlearned models from models retrained without the data.

This is the forget-quality estimator of "Forget with Precision: Assessing Machine Unlearning Approaches".
For a forget set of n samples, M_r reference models (retrained on the retain set only) and M_u unlearned
models, every model gives one number per sample (its *statistic*), and for every sample:

1. fit one Gaussian to the M_r reference values and one to the M_u unlearned values (mean, population std);
2. score each of the M_r + M_u values x by the likelihood ratio N(x; unlearned fit) / N(x; reference fit);
3. call positive the group whose scores have the higher median (the reference group only if its median
   is strictly higher, as in the study);
4. sweep the detection error trade-off over every distinct score value t (predict positive iff
   score >= t), giving pairs (FPR, FNR);
5. epsilon of the sample = +inf if some threshold has FPR = FNR = 0; otherwise, dropping the thresholds
   where exactly one of them is 0, the maximum of log(1 - delta - FPR + 1e-8) - log(FNR + 1e-8) and
   log(1 - delta - FNR + 1e-8) - log(FPR + 1e-8), NaN terms ignored; NaN if nothing is left.

epsilon-hat is the median of the per-sample epsilons, NaN ignored and infinities counted.

Choices this module makes and documents:

* Statistic. Classifiers use the hinge z_y - max_{c != y} z_c of the logits (the study's). Regression
  models (the study's AgeDB age regressor) use the negative absolute error -|prediction - target|: like the
  hinge it is larger when the model fits the sample better, and it is the study's per-sample loss negated.
* Zero standard deviation. A fit with std 0 is the point mass at its mean, the limit of N(mu, s) as s -> 0:
  its density is +inf at the mean and 0 everywhere else. Ratios then follow IEEE arithmetic (c/0 = inf,
  0/c = 0, inf/c = inf), and a ratio that is undefined (0/0 or inf/inf: both fits the same point mass, or
  both densities underflowing far from both means) scores 1, "no evidence either way". The study's code
  (scipy's norm.pdf, then sklearn) has no answer here: it yields NaN and sklearn rejects it. A std that is
  a rounding residue rather than exactly 0 stays a very narrow Gaussian, which ranks values like the point
  mass does. Densities that underflow or overflow (a value many std from a fit) give ratios of 0 or +inf,
  which simply rank lowest or highest; ties among them are ties.
* Thresholds. Every distinct score value is a threshold, tied scores move together, which is what
  sklearn.metrics.det_curve computes from version 1.7 on (it also adds a threshold at +inf, whose point
  (FPR 0, FNR 1) the rule above always drops). The study ran an older det_curve which, when the
  top-scoring tie group holds a negative, also drops the thresholds that share that group's false-positive
  count; on the study's published logits both give identical per-sample values.
* Groups of different sizes. FPR is over the negative group and FNR over the positive group, whatever
  their sizes. (The study labels the concatenated scores as if M_r = M_u, so for unequal groups its labels
  are wrong; with equal groups this module gives the study's numbers.)
* Summaries follow the study: mean is the NaN-ignoring mean (+inf if any sample is infinite), ci95 is
  1.96 * NaN-ignoring std / sqrt(n) with n all samples (NaN when an infinity is present). It is the spread
  of the per-sample values, not the uncertainty of epsilon-hat over the draw of models; JSON also names it
  ci95_samples, and ml.metrics.resolution gives the interval over models.
* Resolution. With M_r and M_u models, a sample that is not perfectly separable has at least one model of
  each group on the wrong side of every threshold, so its epsilon is at most the value at FPR = 1/M_neg,
  FNR = 1/M_pos (`epsilon_ceiling`); anything more separable is +inf. Results carry that ceiling and the
  number of samples at it (`n_at_ceiling`); a median at the ceiling or infinite is censored.

Everything is vectorised over samples and thresholds: scores are sorted once per sample and all (FPR, FNR)
pairs come from cumulative counts. The only Python loops are over the two possible positive groups and
over blocks of delta values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_DELTA = 0.05
CURVE_DELTAS: np.ndarray = np.arange(100) / 100
"""The delta grid of the curve: 0.00, 0.01, ..., 0.99, each the double nearest to k/100."""
LOG_OFFSET = 1e-8
"""Added inside every logarithm of the per-sample epsilon, as the study does."""

_SQRT_2PI = np.sqrt(2 * np.pi)
_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True, eq=False)
class EpsilonResult:
    """Epsilon-hat with its spread, counts, per-sample values and curve over delta, for reports and the API."""

    epsilon_hat: float
    mean: float
    ci95: float
    delta: float
    n_samples: int
    n_reference: int
    n_unlearned: int
    n_infinite: int
    n_nan: int
    epsilon_ceiling: float
    """The largest finite per-sample epsilon these group sizes and delta allow (NaN if none is finite)."""
    n_at_ceiling: int
    per_sample: np.ndarray
    """Per-sample epsilon at `delta`, [n]; +inf for perfectly separable samples, NaN where undefined."""
    deltas: np.ndarray
    """The delta grid of the curve, [D]."""
    curve: np.ndarray
    """epsilon-hat (median over samples) at each delta of `deltas`, [D]."""

    @property
    def censored(self) -> bool:
        """True when the median leans on samples at the ceiling or infinite: the true value may lie above it.

        That is when they are at least half of the defined samples (for an even count the median then
        averages in a censored value).
        """
        defined = self.n_samples - self.n_nan
        return defined > 0 and 2 * (self.n_at_ceiling + self.n_infinite) >= defined

    def to_json(self) -> dict[str, float | int | str | bool | None]:
        """Summary as a JSON-safe dict: infinities become the strings "inf"/"-inf" and NaN becomes null."""
        return {
            "epsilon_hat": json_number(self.epsilon_hat),
            "mean": json_number(self.mean),
            "ci95": json_number(self.ci95),
            "ci95_samples": json_number(self.ci95),
            "n_samples": self.n_samples,
            "n_reference": self.n_reference,
            "n_unlearned": self.n_unlearned,
            "n_infinite": self.n_infinite,
            "n_nan": self.n_nan,
            "epsilon_ceiling": json_number(self.epsilon_ceiling),
            "n_at_ceiling": self.n_at_ceiling,
            "censored": self.censored,
        }


def epsilon_ceiling(n_reference: int, n_unlearned: int, delta: float = DEFAULT_DELTA) -> float:
    """Largest finite per-sample epsilon for these group sizes: one model of each group on the wrong side.

    Both forms of the epsilon fall as FPR or FNR grows, and a sample that is not perfectly separable has
    FPR >= 1/M_neg and FNR >= 1/M_pos at every threshold it keeps; the arrangement with exactly one model of
    each group on the wrong side attains both minima at once. The two forms at that corner swap when the
    groups swap roles, so the value does not depend on which group is positive. NaN when neither form is
    defined there (a group of one model at delta > 1e-8), when no per-sample value can be finite. Computed
    with the same floating-point operations as the per-sample values, so a sample at the ceiling equals it.
    """
    if n_reference < 1 or n_unlearned < 1:
        raise ValueError(f"group sizes must be at least 1, got {n_reference} and {n_unlearned}")
    d = float(_deltas(np.asarray([delta]))[0])
    with np.errstate(all="ignore"):
        forms = np.log(1 - d - np.array([1 / n_reference, 1 / n_unlearned]) + LOG_OFFSET) - np.log(
            np.array([1 / n_unlearned, 1 / n_reference]) + LOG_OFFSET
        )
    return math.nan if np.isnan(forms).all() else float(np.nanmax(forms))


def at_ceiling(value: np.ndarray | float, ceiling: float) -> np.ndarray | bool:
    """Whether finite values sit at the ceiling (to 1e-9, a rounding residue; the next value below is far)."""
    with np.errstate(all="ignore"):
        return np.isfinite(value) & (np.abs(np.asarray(value) - ceiling) <= 1e-9)


def json_number(value: float) -> float | str | None:
    """Encode a float for JSON, which has no infinities or NaN: "inf"/"-inf" strings and null."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def hinge_statistic(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-model hinge z_y - max_{c != y} z_c, the study's statistic for classifiers: [M, n, C], [n] -> [M, n]."""
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    if z.ndim != 3:
        raise ValueError(f"logits must be [models, samples, classes], got shape {z.shape}")
    n, c = z.shape[1:]
    if c < 2:
        raise ValueError(f"the hinge needs at least 2 classes, got {c}")
    y = class_labels(labels, n, c)
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    # Class axis first, so the maximum over classes is an elementwise maximum of [M, n] slices. Maxima
    # are exact in the input precision; the difference is taken in float64, as the study does.
    by_class = np.moveaxis(z, 2, 0).copy()
    index = y[None, None, :]
    true = np.take_along_axis(by_class, index, axis=0)[0].astype(np.float64)
    np.put_along_axis(by_class, index, -np.inf, axis=0)
    return true - by_class.max(axis=0).astype(np.float64)


def regression_statistic(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-model negative absolute error -|prediction - target| for regressors: [M, n] or [M, n, 1], [n] -> [M, n].

    Negated so that, like the hinge, a better fit of the sample is a larger value.
    """
    p = np.asarray(predictions, dtype=np.float64)
    if p.ndim == 3 and p.shape[2] == 1:
        p = p[..., 0]
    if p.ndim != 2:
        raise ValueError(
            f"predictions must be [models, samples] or [models, samples, 1], got shape {p.shape}"
        )
    t = np.asarray(targets, dtype=np.float64)
    if t.shape != (p.shape[1],):
        raise ValueError(f"targets must be [{p.shape[1]}] to match the predictions, got shape {t.shape}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("predictions and targets must be finite")
    return -np.abs(p - t[None, :])


def statistic(outputs: np.ndarray, truth: np.ndarray, task: str) -> np.ndarray:
    """The per-model statistic epsilon-hat compares for a data set's task: the hinge of classifiers' logits
    [M, n, C] with labels [n], or a regressor's -|error| from predictions [M, n] with targets [n]."""
    if task == "regression":
        return regression_statistic(outputs, truth)
    return hinge_statistic(outputs, truth)


def gaussian_likelihood_ratios(reference: np.ndarray, unlearned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score of every value: N(x; unlearned fit) / N(x; reference fit) per sample: [M_r, n], [M_u, n] -> same.

    See the module docstring for the zero-std and undefined-ratio rules.
    """
    ref, unl = _statistics_pair(reference, unlearned)
    ref_scores, unl_scores = _likelihood_ratios(ref, unl)
    return ref_scores.T, unl_scores.T


def per_sample_epsilons(reference: np.ndarray, unlearned: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Per-sample epsilon at each delta from per-model statistics: [M_r, n], [M_u, n], [D] -> [D, n]."""
    ref, unl = _statistics_pair(reference, unlearned)
    return _per_sample_epsilons(ref, unl, _deltas(deltas))


def epsilon_from_statistics(
    reference: np.ndarray,
    unlearned: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    curve_deltas: np.ndarray = CURVE_DELTAS,
) -> EpsilonResult:
    """Epsilon-hat from per-model statistics of reference [M_r, n] and unlearned [M_u, n] models."""
    ref, unl = _statistics_pair(reference, unlearned)
    grid = _deltas(curve_deltas)
    main = float(_deltas(np.asarray([delta]))[0])
    eps = _per_sample_epsilons(ref, unl, np.concatenate([[main], grid]))
    per_sample = eps[0]
    median, mean, ci95 = summarize(per_sample)
    ceiling = epsilon_ceiling(ref.shape[1], unl.shape[1], main)
    return EpsilonResult(
        epsilon_hat=median,
        mean=mean,
        ci95=ci95,
        delta=main,
        n_samples=per_sample.size,
        n_reference=ref.shape[1],
        n_unlearned=unl.shape[1],
        n_infinite=int(np.isinf(per_sample).sum()),
        n_nan=int(np.isnan(per_sample).sum()),
        epsilon_ceiling=ceiling,
        n_at_ceiling=int(at_ceiling(per_sample, ceiling).sum()),
        per_sample=per_sample,
        deltas=grid,
        curve=nanmedian_rows(eps[1:]),
    )


def epsilon_hat(
    reference_logits: np.ndarray,
    unlearned_logits: np.ndarray,
    labels: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    curve_deltas: np.ndarray = CURVE_DELTAS,
) -> EpsilonResult:
    """Epsilon-hat of classifiers from forget-set logits [M_r, n, C] and [M_u, n, C] with true labels [n]."""
    ref, unl = np.asarray(reference_logits), np.asarray(unlearned_logits)
    if ref.ndim != 3 or unl.ndim != 3 or ref.shape[1:] != unl.shape[1:]:
        raise ValueError(
            f"reference and unlearned logits must be [models, samples, classes] with the same samples and "
            f"classes, got {ref.shape} and {unl.shape}"
        )
    return epsilon_from_statistics(
        hinge_statistic(ref, labels), hinge_statistic(unl, labels), delta=delta, curve_deltas=curve_deltas
    )


def epsilon_hat_regression(
    reference_predictions: np.ndarray,
    unlearned_predictions: np.ndarray,
    targets: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    curve_deltas: np.ndarray = CURVE_DELTAS,
) -> EpsilonResult:
    """Epsilon-hat of regressors from forget-set predictions ([M, n] or [M, n, 1]) and targets [n]."""
    return epsilon_from_statistics(
        regression_statistic(reference_predictions, targets),
        regression_statistic(unlearned_predictions, targets),
        delta=delta,
        curve_deltas=curve_deltas,
    )


def summarize(per_sample: np.ndarray) -> tuple[float, float, float]:
    """(median, mean, 95% half-width) of per-sample epsilons, NaN ignored, as the study reports them."""
    values = np.asarray(per_sample, dtype=np.float64)
    with np.errstate(all="ignore"):
        if np.isnan(values).all():
            return math.nan, math.nan, math.nan
        median = float(nanmedian_rows(values[None])[0])
        mean = float(np.nanmean(values))
        ci95 = float(1.96 * np.nanstd(values) / math.sqrt(values.size))
    return median, mean, ci95


def nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Row medians [D] of [D, n] ignoring NaN, bit for bit np.nanmedian's, NaN for all-NaN rows, no warnings."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0 or values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    ordered = np.sort(values, axis=1)
    count = (~np.isnan(values)).sum(axis=1)
    low = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[:, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, np.minimum(count // 2, values.shape[1] - 1)[:, None], axis=1)[:, 0]
    with np.errstate(all="ignore"):
        median = np.where(count % 2 == 1, low, (low + high) / 2)
    return np.where(count == 0, np.nan, median)


def class_labels(labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """Validated class labels as int64 [n]; integral floats are accepted, as .npy files often hold them."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must be [{n}] to match the logits, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) and not (
        np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
    ):
        raise ValueError("labels must be integer class indices")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {y.min()}..{y.max()}")
    return y


def _statistics_pair(reference: np.ndarray, unlearned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated statistics, transposed to C-contiguous [n, M] so per-sample reductions match the study's bits."""
    ref = np.asarray(reference, dtype=np.float64)
    unl = np.asarray(unlearned, dtype=np.float64)
    for name, s in (("reference", ref), ("unlearned", unl)):
        if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
            raise ValueError(f"{name} statistics must be [models >= 1, samples >= 1], got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"{name} statistics must be finite")
    if ref.shape[1] != unl.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} samples but unlearned has {unl.shape[1]}")
    return np.ascontiguousarray(ref.T), np.ascontiguousarray(unl.T)


def _deltas(deltas: np.ndarray) -> np.ndarray:
    """Validated delta values in [0, 1)."""
    d = np.asarray(deltas, dtype=np.float64).reshape(-1)
    if not ((d >= 0) & (d < 1)).all():
        raise ValueError("delta must lie in [0, 1)")
    return d


def _gaussian_density(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """N(x; mean, std) computed as scipy.stats.norm.pdf does; std 0 is the point mass (inf at mean, else 0)."""
    with np.errstate(all="ignore"):
        z = (x - mean) / std
        density = np.exp(-(z**2) / 2.0) / _SQRT_2PI / std
    return np.where(std == 0.0, np.where(x == mean, np.inf, 0.0), density)


def _likelihood_ratios(ref: np.ndarray, unl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Likelihood-ratio scores of [n, M_r] reference and [n, M_u] unlearned values, per-sample fits."""
    ref_mean, ref_std = ref.mean(axis=1, keepdims=True), ref.std(axis=1, keepdims=True)
    unl_mean, unl_std = unl.mean(axis=1, keepdims=True), unl.std(axis=1, keepdims=True)
    scores = []
    for values in (ref, unl):
        with np.errstate(all="ignore"):
            ratio = _gaussian_density(values, unl_mean, unl_std) / _gaussian_density(
                values, ref_mean, ref_std
            )
        ratio[np.isnan(ratio)] = 1.0
        scores.append(ratio)
    return scores[0], scores[1]


def _per_sample_epsilons(ref: np.ndarray, unl: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """[n, M_r], [n, M_u] statistics -> [D, n] per-sample epsilons."""
    ref_scores, unl_scores = _likelihood_ratios(ref, unl)
    unlearned_positive = ~(np.median(ref_scores, axis=1) > np.median(unl_scores, axis=1))
    scores = np.concatenate([ref_scores, unl_scores], axis=1)
    is_unlearned = np.arange(scores.shape[1]) >= ref.shape[1]
    out = np.empty((deltas.size, scores.shape[0]))
    for flag in (False, True):
        rows = unlearned_positive == flag
        if rows.any():
            out[:, rows] = _epsilons_fixed_groups(scores[rows], is_unlearned == flag, deltas)
    return out


def _epsilons_fixed_groups(scores: np.ndarray, positive: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Per-sample epsilons [D, k] for scores [k, N] whose positive columns are the same in every row.

    Sorted ascending, the threshold at the first position j of each tie group predicts positive for
    positions >= j, so FNR counts the positives before j and FPR the negatives from j on. Both forms of
    the epsilon grow as FPR or FNR shrink, so only the corners of the DET staircase can attain the
    maximum (least FNR for their FPR and least FPR for their FNR); the per-delta work is on those.
    """
    k, n_all = scores.shape
    n_pos = int(positive.sum())
    n_neg = n_all - n_pos
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, axis=1)
    pos_sorted = positive[order]
    fns = np.cumsum(pos_sorted, axis=1) - pos_sorted
    fps = n_neg - (np.arange(n_all) - fns)
    valid = np.ones((k, n_all), dtype=bool)
    valid[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    infinite = (valid & (fns == 0) & (fps == 0)).any(axis=1)
    rows, cols = np.nonzero(valid & (fns > 0) & (fps > 0))
    kept_fps, kept_fns = fps[rows, cols], fns[rows, cols]

    # Along a row fps falls and fns rises: the first point of an fps value has its least fns and the
    # last point of an fns value its least fps.
    fps_key = rows * (n_neg + 1) + kept_fps
    fns_key = rows * (n_pos + 1) + kept_fns
    corner = np.ones(rows.size, dtype=bool)
    corner[1:] &= fps_key[1:] != fps_key[:-1]
    corner[:-1] &= fns_key[:-1] != fns_key[1:]
    rows, kept_fps, kept_fns = rows[corner], kept_fps[corner], kept_fns[corner]
    counts = np.bincount(rows, minlength=k)
    has_corner = counts > 0
    starts = (np.cumsum(counts) - counts)[has_corner]

    fpr_grid = np.arange(n_neg + 1) / n_neg
    fnr_grid = np.arange(n_pos + 1) / n_pos
    out = np.full((deltas.size, k), np.nan)
    with np.errstate(all="ignore"):
        log_fnr = np.log(fnr_grid[kept_fns] + LOG_OFFSET)
        log_fpr = np.log(fpr_grid[kept_fps] + LOG_OFFSET)
        block = max(1, _BLOCK_ELEMENTS // max(1, rows.size))
        for start in range(0, deltas.size if rows.size else 0, block):
            d = deltas[start : start + block, None]
            # [delta, corner], C-ordered (np.take, not fancy indexing) so the segmented maximum over each
            # sample's run of corners is fast.
            first_form = np.take(np.log(1 - d - fpr_grid + LOG_OFFSET), kept_fps, axis=1) - log_fnr
            second_form = np.take(np.log(1 - d - fnr_grid + LOG_OFFSET), kept_fns, axis=1) - log_fpr
            out[start : start + block, has_corner] = np.fmax.reduceat(
                np.fmax(first_form, second_form), starts, axis=1
            )
    out[:, infinite] = np.inf
    return out
