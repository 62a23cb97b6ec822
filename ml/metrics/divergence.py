"""How far an unlearned group's predictions on the forget set lie from the reference (retrained) group's.

mean_kl compares average predictive distributions, the models of each group pooled as an ensemble:

* per group and sample i, the mean of its models' softmax outputs, p_i = (1/M_r) sum_m softmax(z_ref[m, i])
  for the reference group and q_i likewise over the M_u unlearned models;
* per sample, KL(p_i || q_i) = sum_c p_ic (log p_ic - log q_ic): the direction that weighs each class by the
  retrained models' belief in it, so an unlearned group that rules out what retraining considers likely
  is penalised most (this KL is infinite only if q_ic = 0 where p_ic > 0, which finite logits never give);
* the figure is the mean over the n forget samples, in nats.

Log-probabilities of the averages come from a logsumexp over models of float64 log-softmaxes, so no
probability is formed before the logarithm and tiny ones do not underflow to log 0.
"""

from __future__ import annotations

import numpy as np


def _log_mean_softmax(logits: np.ndarray, name: str) -> np.ndarray:
    """log of the mean softmax over models: [n, C] from logits [M, n, C] (or [n, C], one model)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3 or 0 in z.shape:
        raise ValueError(
            f"{name} logits must be [models, samples, classes] or [samples, classes], got {z.shape}"
        )
    if not np.isfinite(z).all():
        raise ValueError(f"{name} logits must be finite")
    z = z - z.max(axis=2, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    peak = log_p.max(axis=0)
    return peak + np.log(np.exp(log_p - peak).mean(axis=0))


def kl_per_sample(reference_logits: np.ndarray, unlearned_logits: np.ndarray) -> np.ndarray:
    """KL(reference mean prediction || unlearned mean prediction) per sample, float64 [n], in nats."""
    log_p = _log_mean_softmax(reference_logits, "reference")
    log_q = _log_mean_softmax(unlearned_logits, "unlearned")
    if log_p.shape != log_q.shape:
        raise ValueError(
            f"reference and unlearned must cover the same samples and classes, got {log_p.shape} and {log_q.shape}"
        )
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=1)


def mean_kl(reference_logits: np.ndarray, unlearned_logits: np.ndarray) -> float:
    """Mean over forget samples of KL(p || q), p and q the groups' mean softmax predictions (module docstring)."""
    return float(kl_per_sample(reference_logits, unlearned_logits).mean())
