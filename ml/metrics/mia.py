"""MIA-efficacy: how many forget samples a membership-inference attack takes for unseen data.

Source: the SVC attack of Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning" (code:
OPTML-Group/Unlearn-Sparse, evaluation/SVC_MIA.py), whose "confidence" figure Fan et al. 2024 (SalUn)
report as MIA-efficacy; the attack is the metric-based one of Song & Mittal 2021, "Systematic Evaluation
of Privacy Risks of Machine Learning Models". Procedure:

1. Features per sample from the model's logits on it (one or more, in the order given):
   * confidence: the softmax probability of the true class, p_y (the default, the figure SalUn reports);
   * entropy: -sum_c p_c log p_c;
   * m_entropy: Song & Mittal's modified entropy, -(1 - p_y) log p_y - sum_{c != y} p_c log(1 - p_c)
     (the source's m_entropy indexes whole label columns, a bug not reproduced here);
   * loss: the cross-entropy -log p_y.
   Probabilities come from a float64 log-softmax; log(1 - p_c) is floored at log of the smallest normal
   double, so a class with p_c = 1 gives a large finite term instead of infinity.
2. The attacker learns members (retain samples, label 1) against non-members (test samples, label 0) on
   balanced classes: the larger set is subsampled without replacement to the smaller one's size with
   numpy's default_rng(seed) (the source balances by taking as many retain samples as there are test
   samples).
3. The attacker is the source's SVC(C=3, gamma="auto", kernel="rbf") on the raw features, or a
   logistic regression on standardised features.
4. MIA-efficacy is the share of forget samples the attacker predicts as non-members. Higher means the
   forget set looks more like data the model never saw; a model retrained without the forget set scores
   about the share of its unseen samples the attacker calls non-members, not necessarily 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ml.metrics.epsilon import class_labels

Feature = Literal["confidence", "entropy", "m_entropy", "loss"]
Attacker = Literal["svc", "logistic"]

_LOG_TINY = float(np.log(np.finfo(np.float64).tiny))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Shifted by the row maximum, so no exponential overflows."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def mia_features(
    logits: np.ndarray, labels: np.ndarray, features: Sequence[Feature] = ("confidence",)
) -> np.ndarray:
    """The attack's float64 [n, len(features)] inputs from logits [n, C] and true labels [n]."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be [samples, classes >= 2], got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    y = class_labels(labels, len(z), z.shape[1])
    if not features:
        raise ValueError("give at least one feature")
    log_p = _log_softmax(z)
    p = np.exp(log_p)
    rows = np.arange(len(z))
    log_p_y, p_y = log_p[rows, y], p[rows, y]
    columns = []
    for feature in features:
        if feature == "confidence":
            columns.append(p_y)
        elif feature == "entropy":
            columns.append(-(p * log_p).sum(axis=1))
        elif feature == "m_entropy":
            with np.errstate(divide="ignore"):  # log1p(-1) = -inf, floored just below
                log_rest = np.maximum(np.log1p(-p), _LOG_TINY)
            others = np.where(np.arange(z.shape[1]) == y[:, None], 0.0, p * log_rest).sum(axis=1)
            columns.append(-(1 - p_y) * log_p_y - others)
        elif feature == "loss":
            columns.append(-log_p_y)
        else:
            raise ValueError(f"unknown feature {feature!r}; valid: confidence, entropy, m_entropy, loss")
    return np.stack(columns, axis=1)


def mia_efficacy(
    retain_logits: np.ndarray,
    retain_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    forget_logits: np.ndarray,
    forget_labels: np.ndarray,
    *,
    features: Sequence[Feature] = ("confidence",),
    attacker: Attacker = "svc",
    seed: int = 0,
) -> float:
    """Share of forget samples an attacker trained on retain (members) vs test (non-members) calls non-members."""
    members = mia_features(retain_logits, retain_labels, features)
    outsiders = mia_features(test_logits, test_labels, features)
    target = mia_features(forget_logits, forget_labels, features)
    n = min(len(members), len(outsiders))
    if n == 0 or len(target) == 0:
        raise ValueError("MIA-efficacy needs retain, test and forget samples")
    rng = np.random.default_rng(seed)
    members = members[np.sort(rng.choice(len(members), n, replace=False))]
    outsiders = outsiders[np.sort(rng.choice(len(outsiders), n, replace=False))]
    x = np.concatenate([members, outsiders])
    y = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
    if attacker == "svc":
        model = SVC(C=3, gamma="auto", kernel="rbf")
    elif attacker == "logistic":
        model = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed))
    else:
        raise ValueError(f"unknown attacker {attacker!r}; valid: svc, logistic")
    model.fit(x, y)
    return float(np.mean(model.predict(target) == 0))
