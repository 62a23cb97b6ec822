"""NeurIPS 2023 challenge score: a loop over every rule checks the vectorised epsilons; hand-computed parts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ml.metrics.neurips import (
    EPSILON_CAP,
    accuracy_ratio,
    bucket_count,
    forgetting_quality,
    logit_scaled_confidence,
    neurips_epsilons,
    neurips_score,
)
from ml.metrics.seed_layout import load_approach

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "seed-cifar10"
VALUES = st.sampled_from([-3.0, -1.0, 0.0, 0.25, 1.0, 2.0, 6.0])


def rule_epsilon(fpr: float, fnr: float, delta: float) -> float | None:
    """One rule's epsilon, None when the rule is skipped."""
    if fpr == 0 and fnr == 0:
        return math.inf
    if fpr == 0 or fnr == 0:
        return None
    with np.errstate(all="ignore"):
        terms = np.array([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)])
    terms = terms[~np.isnan(terms)]
    return float(terms.max()) if terms.size else None


def loop_epsilon(ref: np.ndarray, unl: np.ndarray, delta: float = 1e-5) -> float:
    """Every interval [lo, hi) over the observed values and +-inf, and its complement, one at a time."""
    values = np.concatenate([ref, unl])
    is_unlearned = np.arange(values.size) >= ref.size
    cuts = [-math.inf, *sorted(set(values.tolist())), math.inf]
    best = 0.0
    for lo in cuts:
        for hi in cuts:
            if lo >= hi:
                continue
            inside = (values >= lo) & (values < hi)
            for predicted in (inside, ~inside):
                fpr = float(np.mean(predicted[~is_unlearned]))
                fnr = float(np.mean(~predicted[is_unlearned]))
                eps = rule_epsilon(fpr, fnr, delta)
                if eps is not None:
                    best = max(best, eps)
    if unl.std() < 0.01 * ref.std():
        return EPSILON_CAP
    return min(best, EPSILON_CAP)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 4)),
    shift=st.sampled_from([0.0, 0.0, 0.5, 20.0]),
    data=st.data(),
)
def test_vectorised_equals_rule_loop(sizes: tuple[int, int, int], shift: float, data: st.DataObject) -> None:
    m_r, m_u, n = sizes
    ref = data.draw(arrays(np.float64, (m_r, n), elements=VALUES))
    unl = data.draw(arrays(np.float64, (m_u, n), elements=VALUES)) + shift
    expected = [loop_epsilon(ref[:, j], unl[:, j]) for j in range(n)]
    np.testing.assert_array_equal(neurips_epsilons(ref, unl), expected)


def test_separable_and_collapsed_samples_get_the_cap() -> None:
    ref = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    unl = np.array([[10.0, 1.0], [11.0, 1.0], [12.0, 1.0]])
    # Sample 0 is perfectly separable; sample 1 has unlearned outputs collapsed onto one value.
    np.testing.assert_array_equal(neurips_epsilons(ref, unl), [EPSILON_CAP, EPSILON_CAP])


def test_interval_rules_catch_a_middle_group() -> None:
    # The unlearned values sit inside the reference range, so no single threshold separates them, but the
    # interval [1, 2.5) holds both unlearned models and no reference model: perfectly separable.
    ref = np.array([[0.0], [2.5], [5.0], [6.0]])
    unl = np.array([[1.0], [2.0]])
    assert neurips_epsilons(ref, unl)[0] == EPSILON_CAP


def test_identical_groups_score_zero() -> None:
    # Every rule treats the two copies of a value alike, so FPR + FNR = 1 and no rule beats epsilon 0.
    ref = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert neurips_epsilons(ref, ref.copy())[0] == 0.0
    assert loop_epsilon(ref[:, 0], ref[:, 0]) == 0.0


def test_logit_scaled_confidence() -> None:
    logits = np.array([[[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]])
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    expected = np.log(p[0, [0, 1], labels]) - np.log(1 - p[0, [0, 1], labels])
    np.testing.assert_allclose(logit_scaled_confidence(logits, labels)[0], expected, rtol=1e-12)
    huge = np.array([[[1000.0, 0.0, 0.0], [-1000.0, 0.0, 0.0]]])
    np.testing.assert_allclose(
        logit_scaled_confidence(huge, np.array([0, 0]))[0], [1000.0 - math.log(2), -1000.0 - math.log(2)]
    )


def test_bucket_count_and_forgetting_quality() -> None:
    assert [bucket_count(n) for n in (3, 40, 80, 512)] == [2, 8, 9, 13]
    with pytest.raises(ValueError, match="at least 3"):
        bucket_count(2)
    eps = np.array([0.0, 0.49, 0.5, 1.2, 4.0, 50.0])
    # N = 80: 9 buckets, k = 0, 0, 1, 2, 8 (capped at B - 1), 8.
    assert forgetting_quality(eps, 80) == pytest.approx((1 + 1 + 0.5 + 0.25 + 2**-8 + 2**-8) / 6)
    with pytest.raises(ValueError, match="epsilons"):
        forgetting_quality(np.array([math.inf]), 80)


def test_accuracy_ratio_is_capped() -> None:
    assert accuracy_ratio([0.9, 1.0], [0.9]) == 1.0
    assert accuracy_ratio([0.45], [0.8, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive"):
        accuracy_ratio([0.5], [0.0])


def test_score_multiplies_quality_by_utility() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(8, 20, 4))
    unl = rng.normal(size=(6, 20, 4))
    labels = rng.integers(0, 4, size=20)
    result = neurips_score(
        ref,
        unl,
        labels,
        reference_retain_accuracy=[0.99, 1.0],
        reference_test_accuracy=[0.9],
        unlearned_retain_accuracy=[0.95],
        unlearned_test_accuracy=[0.99],
    )
    eps = neurips_epsilons(logit_scaled_confidence(ref, labels), logit_scaled_confidence(unl, labels))
    np.testing.assert_array_equal(result.per_sample, eps)
    assert result.n_buckets == bucket_count(6) == 4
    assert result.forgetting_quality == forgetting_quality(eps, 6)
    assert result.retain_ratio == pytest.approx(0.95 / 0.995)
    assert result.test_ratio == 1.0
    assert result.score == pytest.approx(result.forgetting_quality * 0.95 / 0.995)
    assert list(result.to_json()) == [
        "score",
        "forgetting_quality",
        "retain_ratio",
        "test_ratio",
        "n_samples",
        "n_reference",
        "n_unlearned",
        "n_buckets",
    ]


def test_published_baseline() -> None:
    if not GOLDEN.is_dir():
        pytest.skip(f"the study's published logits are not at {GOLDEN}")
    data = load_approach(GOLDEN, "baseline")
    assert data.reference_accuracy is not None and data.unlearned_accuracy is not None
    result = neurips_score(
        data.reference_logits,
        data.unlearned_logits,
        data.labels,
        reference_retain_accuracy=data.reference_accuracy.retain,
        reference_test_accuracy=data.reference_accuracy.test,
        unlearned_retain_accuracy=data.unlearned_accuracy.retain,
        unlearned_test_accuracy=data.unlearned_accuracy.test,
    )
    assert (result.n_reference, result.n_unlearned, result.n_buckets) == (40, 40, 8)
    assert (result.retain_ratio, result.test_ratio) == (1.0, 1.0)
    assert result.score == pytest.approx(0.0865625, abs=1e-12)
    assert float(np.median(result.per_sample)) == pytest.approx(2.0794, abs=1e-4)
