"""The NeurIPS 2023 Machine Unlearning challenge score, a second forget-quality metric next to epsilon-hat.

Source: the evaluation of the NeurIPS 2023 Machine Unlearning challenge (Kaggle), described in
Triantafillou et al. 2024, "Are we making progress in unlearning? Findings from the first NeurIPS unlearning
competition" (arXiv:2406.09073). For each forget sample it asks how well any simple rule on one number per
model tells N unlearned models from N models retrained without the forget set, turns that into an epsilon
of (epsilon, delta)-unlearning, scores it by bucket, and scales the mean by the models' utility.

Choices, each documented where it is made:

* Statistic: the logit-scaled confidence of the true class, log p_y - log(sum_{c != y} p_c), which is
  z_y - logsumexp_{c != y} z_c, computed from logits without forming probabilities.
* Rules: every single threshold (predict "unlearned" when the statistic is >= t, or when it is < t) and
  every interval (inside [t1, t2), or outside it), with thresholds at the observed values. "Unlearned" is
  the positive class; the rule set contains each rule's complement, so the choice does not matter.
* Per rule, with FPR over the reference models and FNR over the unlearned ones: +inf when both are 0, the
  rule is skipped when exactly one is 0, else max(log(1 - delta - FPR) - log(FNR),
  log(1 - delta - FNR) - log(FPR)) with NaN terms ignored (no 1e-8 offset here, unlike the study);
  delta = 1e-5. A sample's epsilon is the maximum over rules and 0, clipped to [0, 50] (+inf becomes 50).
* Collapse guard: when the unlearned group's spread (population std of the statistic) is under 1% of the
  reference group's, the sample gets the cap, 50: near-identical outputs are a sign of a broken model,
  not of forgetting.
* Buckets: width 0.5; bucket k = floor(epsilon / 0.5) scores 2^-k; there are B = ceil(ln(N - 1) / 0.5)
  buckets and the last takes everything above, because ln(N - 1) is about the largest finite epsilon N
  models per group can show. N is the number of models per group, the smaller group when they differ;
  the challenge's N = 512 gives its B = 13.
* F is the mean bucket score over samples, in (0, 1]; the final score is F x retain ratio x test ratio,
  each ratio the mean unlearned accuracy over the mean reference accuracy, capped at 1 (being more accurate
  than retraining earns nothing, since the target is the retrained model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ml.metrics.epsilon import class_labels, json_number

NEURIPS_DELTA = 1e-5
EPSILON_CAP = 50.0
BUCKET_WIDTH = 0.5
SPREAD_FLOOR = 0.01
MIN_MODELS = 3
"""ln(N - 1) must be positive for the buckets to exist."""
"""An unlearned spread under this fraction of the reference spread gets the capped epsilon."""

_CHUNK_ELEMENTS = 1 << 21


@dataclass(frozen=True, eq=False)
class NeuripsResult:
    """The challenge's final score with its parts, for reports and the API."""

    score: float
    forgetting_quality: float
    retain_ratio: float
    test_ratio: float
    n_samples: int
    n_reference: int
    n_unlearned: int
    n_buckets: int
    per_sample: np.ndarray
    """Per-sample epsilon, clipped to [0, 50], [n]."""

    def to_json(self) -> dict[str, float | int | str | None]:
        """Summary as a JSON-safe dict (no infinities can occur; NaN would become null)."""
        return {
            "score": json_number(self.score),
            "forgetting_quality": json_number(self.forgetting_quality),
            "retain_ratio": json_number(self.retain_ratio),
            "test_ratio": json_number(self.test_ratio),
            "n_samples": self.n_samples,
            "n_reference": self.n_reference,
            "n_unlearned": self.n_unlearned,
            "n_buckets": self.n_buckets,
        }


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y - log(sum of the other p) = z_y - logsumexp_{c != y} z_c, stably: [M, n, C], [n] -> [M, n]."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 3 or z.shape[2] < 2:
        raise ValueError(f"logits must be [models, samples, classes >= 2], got shape {z.shape}")
    y = class_labels(labels, *z.shape[1:])
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    index = y[None, :, None]
    true = np.take_along_axis(z, index, axis=2)[..., 0]
    others = z.copy()
    np.put_along_axis(others, index, -np.inf, axis=2)
    top = others.max(axis=2, keepdims=True)
    return true - (top[..., 0] + np.log(np.exp(others - top).sum(axis=2)))


def neurips_epsilons(
    reference: ArrayLike, unlearned: ArrayLike, *, delta: float = NEURIPS_DELTA
) -> np.ndarray:
    """Per-sample epsilon over single-threshold and interval rules, clipped to [0, 50]: [M_r, n], [M_u, n] -> [n].

    All rules of a sample come from cumulative counts over its sorted values, vectorised over samples and
    threshold pairs; samples are processed in blocks only to bound memory.
    """
    ref = np.ascontiguousarray(np.asarray(reference, dtype=np.float64).T)
    unl = np.ascontiguousarray(np.asarray(unlearned, dtype=np.float64).T)
    if ref.ndim != 2 or unl.ndim != 2 or ref.shape[0] != unl.shape[0] or min(ref.shape + unl.shape) < 1:
        raise ValueError(
            f"statistics must be [models >= 1, samples >= 1] with the same samples, got "
            f"{np.shape(reference)} and {np.shape(unlearned)}"
        )
    if not (np.isfinite(ref).all() and np.isfinite(unl).all()):
        raise ValueError("statistics must be finite")
    if not 0 <= delta < 1:
        raise ValueError("delta must lie in [0, 1)")
    n, n_neg = ref.shape
    n_pos = unl.shape[1]
    table = _rule_epsilons(n_neg, n_pos, delta)
    values = np.concatenate([ref, unl], axis=1)
    positive = np.arange(n_neg + n_pos) >= n_neg
    eps = np.empty(n)
    chunk = max(1, _CHUNK_ELEMENTS // (n_neg + n_pos + 1) ** 2)
    for start in range(0, n, chunk):
        eps[start : start + chunk] = _best_rule(values[start : start + chunk], positive, table)
    eps = np.clip(eps, 0.0, EPSILON_CAP)
    eps[unl.std(axis=1) < SPREAD_FLOOR * ref.std(axis=1)] = EPSILON_CAP
    return eps


def bucket_count(n_models: int, width: float = BUCKET_WIDTH) -> int:
    """B = ceil(ln(N - 1) / width): buckets up to about the largest finite epsilon N models per group can show."""
    if n_models < MIN_MODELS:
        raise ValueError(f"the bucket score needs at least {MIN_MODELS} models per group, got {n_models}")
    return max(1, math.ceil(math.log(n_models - 1) / width))


def forgetting_quality(epsilons: ArrayLike, n_models: int, width: float = BUCKET_WIDTH) -> float:
    """F: mean over samples of 2^-k, k = min(floor(epsilon / width), B - 1), so 1 is perfect forgetting."""
    eps = np.asarray(epsilons, dtype=np.float64)
    if eps.size == 0 or not ((eps >= 0) & (eps <= EPSILON_CAP)).all():
        raise ValueError(f"epsilons must be a non-empty array of values in [0, {EPSILON_CAP}]")
    k = np.minimum(np.floor(eps / width), bucket_count(n_models, width) - 1)
    return float(np.mean(2.0**-k))


def accuracy_ratio(unlearned: ArrayLike, reference: ArrayLike) -> float:
    """Mean unlearned accuracy over mean reference accuracy, capped at 1."""
    unl = np.asarray(unlearned, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if unl.size == 0 or ref.size == 0 or not (np.isfinite(unl).all() and np.isfinite(ref).all()):
        raise ValueError("accuracies must be non-empty and finite")
    if ref.mean() <= 0:
        raise ValueError("the reference models' mean accuracy must be positive")
    return float(min(1.0, unl.mean() / ref.mean()))


def neurips_score(
    reference_logits: np.ndarray,
    unlearned_logits: np.ndarray,
    labels: np.ndarray,
    *,
    reference_retain_accuracy: ArrayLike,
    reference_test_accuracy: ArrayLike,
    unlearned_retain_accuracy: ArrayLike,
    unlearned_test_accuracy: ArrayLike,
    delta: float = NEURIPS_DELTA,
) -> NeuripsResult:
    """The challenge's score of unlearned vs reference models from forget-set logits and per-model accuracies."""
    ref = logit_scaled_confidence(reference_logits, labels)
    unl = logit_scaled_confidence(unlearned_logits, labels)
    eps = neurips_epsilons(ref, unl, delta=delta)
    n_models = min(ref.shape[0], unl.shape[0])
    quality = forgetting_quality(eps, n_models)
    retain = accuracy_ratio(unlearned_retain_accuracy, reference_retain_accuracy)
    test = accuracy_ratio(unlearned_test_accuracy, reference_test_accuracy)
    return NeuripsResult(
        score=quality * retain * test,
        forgetting_quality=quality,
        retain_ratio=retain,
        test_ratio=test,
        n_samples=eps.size,
        n_reference=ref.shape[0],
        n_unlearned=unl.shape[0],
        n_buckets=bucket_count(n_models),
        per_sample=eps,
    )


def _rule_epsilons(n_neg: int, n_pos: int, delta: float) -> np.ndarray:
    """Epsilon of a rule with f false positives and g false negatives, [n_neg + 1, n_pos + 1]; -inf = skipped."""
    fpr = (np.arange(n_neg + 1) / n_neg)[:, None]
    fnr = (np.arange(n_pos + 1) / n_pos)[None, :]
    with np.errstate(all="ignore"):
        table = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
    table[np.isnan(table)] = -np.inf
    table[0, :] = -np.inf
    table[:, 0] = -np.inf
    table[0, 0] = np.inf
    return table


def _best_rule(values: np.ndarray, positive: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Largest rule epsilon per sample of [k, N] values (no floor, no cap).

    Cut c (0..N) splits the sorted values into the first c and the rest; a cut inside a tie group is not
    a threshold. Interval [cut a, cut b) holds tp = P(b) - P(a) positives and fp = F(b) - F(a) negatives
    (P, F cumulative counts): inside it errs on fp negatives and n_pos - tp positives, outside it on
    n_neg - fp negatives and tp positives. a = 0 or b = N are the single thresholds.
    """
    k, n_all = values.shape
    n_neg, n_pos = table.shape[0] - 1, table.shape[1] - 1
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    pos_sorted = positive[order]
    cum_pos = np.zeros((k, n_all + 1), dtype=np.int32)
    cum_pos[:, 1:] = np.cumsum(pos_sorted, axis=1)
    cum_neg = np.arange(n_all + 1, dtype=np.int32) - cum_pos
    cut = np.ones((k, n_all + 1), dtype=bool)
    cut[:, 1:-1] = ordered[:, 1:] != ordered[:, :-1]
    usable = cut[:, :, None] & cut[:, None, :] & np.triu(np.ones((n_all + 1, n_all + 1), dtype=bool), 1)
    # Pairs with a >= b would give negative counts; they are zeroed here and masked out below.
    tp = np.where(usable, cum_pos[:, None, :] - cum_pos[:, :, None], 0)
    fp = np.where(usable, cum_neg[:, None, :] - cum_neg[:, :, None], 0)
    inside = table[fp, n_pos - tp]
    outside = table[n_neg - fp, tp]
    return np.where(usable, np.maximum(inside, outside), -np.inf).max(axis=(1, 2))
