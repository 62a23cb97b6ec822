"""MIA-efficacy and the mean KL divergence on constructed logits with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml.metrics.divergence import kl_per_sample, mean_kl
from ml.metrics.mia import mia_efficacy, mia_features

LOG3 = math.log(3)


def test_features_of_a_known_two_class_prediction() -> None:
    # p = (3/4, 1/4) with the true class first.
    logits, labels = np.array([[LOG3, 0.0]]), np.array([0])
    features = mia_features(logits, labels, ("confidence", "entropy", "m_entropy", "loss"))[0]
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    # -(1 - p_y) log p_y - p_other log(1 - p_other) = -0.25 log 0.75 - 0.25 log 0.75
    m_entropy = -0.5 * math.log(0.75)
    np.testing.assert_allclose(features, [0.75, entropy, m_entropy, -math.log(0.75)], rtol=1e-12)


def test_features_stay_finite_at_saturated_predictions() -> None:
    np.testing.assert_allclose(mia_features(np.zeros((1, 4)), np.array([2]), ("entropy",)), [[math.log(4)]])
    saturated = mia_features(np.array([[0.0, 1000.0]]), np.array([0]), ("confidence", "m_entropy", "loss"))
    assert np.isfinite(saturated).all() and saturated[0, 0] == 0.0 and saturated[0, 2] == 1000.0


def population(
    rng: np.random.Generator, n: int, margin: float, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true class stands `margin` above Gaussian noise: large margins look like members."""
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 0.5, (n, classes))
    logits[np.arange(n), labels] += margin
    return logits, labels


@pytest.mark.parametrize("attacker", ["svc", "logistic"])
def test_a_forget_set_that_looks_unseen_scores_one_and_one_that_looks_trained_on_scores_zero(
    attacker: str,
) -> None:
    rng = np.random.default_rng(0)
    retain, test = population(rng, 400, 8.0), population(rng, 200, 1.0)
    like_test, like_retain = population(rng, 100, 1.0), population(rng, 100, 8.0)
    forgotten = mia_efficacy(*retain, *test, *like_test, attacker=attacker)  # type: ignore[arg-type]
    remembered = mia_efficacy(*retain, *test, *like_retain, attacker=attacker)  # type: ignore[arg-type]
    assert forgotten >= 0.95
    assert remembered <= 0.05


def test_unbalanced_sets_are_balanced_before_the_attacker_learns() -> None:
    rng = np.random.default_rng(1)
    few, many = population(rng, 40, 8.0), population(rng, 400, 1.0)
    like_few, like_many = population(rng, 100, 8.0), population(rng, 100, 1.0)
    assert mia_efficacy(*few, *many, *like_few) <= 0.05 and mia_efficacy(*few, *many, *like_many) >= 0.95
    many_members, few_outsiders = population(rng, 400, 8.0), population(rng, 40, 1.0)
    assert mia_efficacy(*many_members, *few_outsiders, *like_many) >= 0.95


def test_the_same_seed_gives_the_same_efficacy() -> None:
    rng = np.random.default_rng(2)
    retain, test, forget = population(rng, 300, 3.0), population(rng, 100, 2.0), population(rng, 80, 2.5)
    assert mia_efficacy(*retain, *test, *forget, seed=3) == mia_efficacy(*retain, *test, *forget, seed=3)


def test_mia_refuses_malformed_input() -> None:
    rng = np.random.default_rng(3)
    retain, test = population(rng, 20, 5.0), population(rng, 20, 1.0)
    with pytest.raises(ValueError, match="forget samples"):
        mia_efficacy(*retain, *test, np.zeros((0, 10)), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="labels must lie"):
        mia_features(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="unknown feature"):
        mia_features(np.zeros((2, 3)), np.array([0, 1]), ("margin",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown attacker"):
        mia_efficacy(*retain, *test, *retain, attacker="forest")  # type: ignore[arg-type]


def test_identical_predictions_diverge_by_nothing() -> None:
    logits = np.random.default_rng(4).normal(size=(5, 30, 10))
    assert mean_kl(logits, logits) == pytest.approx(0.0, abs=1e-12)
    assert mean_kl(logits, logits[::-1]) == pytest.approx(0.0, abs=1e-12)  # same ensemble, other order


def test_kl_of_a_known_two_class_case() -> None:
    # p = (1/2, 1/2) against q = (3/4, 1/4): KL(p || q) = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3).
    assert mean_kl(np.zeros((1, 2)), np.array([[LOG3, 0.0]])) == pytest.approx(0.5 * math.log(4 / 3))


def test_kl_compares_the_groups_average_predictions_in_the_reference_to_unlearned_direction() -> None:
    # Two reference models, (3/4, 1/4) and (1/4, 3/4), average to (1/2, 1/2).
    reference = np.array([[[LOG3, 0.0]], [[0.0, LOG3]]])
    unlearned = np.array([[[LOG3, 0.0]]])
    assert mean_kl(reference, unlearned) == pytest.approx(0.5 * math.log(4 / 3))
    reverse = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert mean_kl(unlearned, reference) == pytest.approx(reverse)
    assert reverse != pytest.approx(0.5 * math.log(4 / 3))


def test_kl_averages_over_samples_and_survives_extreme_logits() -> None:
    reference = np.array([[0.0, 0.0], [0.0, -1000.0]])
    unlearned = np.array([[LOG3, 0.0], [0.0, -2000.0]])
    per_sample = kl_per_sample(reference, unlearned)
    assert per_sample[0] == pytest.approx(0.5 * math.log(4 / 3)) and 0 <= per_sample[1] < 1e-300
    assert mean_kl(reference, unlearned) == pytest.approx(per_sample.mean())


def test_kl_refuses_mismatched_groups() -> None:
    with pytest.raises(ValueError, match="same samples"):
        mean_kl(np.zeros((3, 4, 10)), np.zeros((2, 5, 10)))
    with pytest.raises(ValueError, match="finite"):
        mean_kl(np.full((1, 2), np.inf), np.zeros((1, 2)))
