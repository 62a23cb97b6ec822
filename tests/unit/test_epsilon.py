"""Epsilon-hat: the study's published values, the loop reference on random inputs, and the documented rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sklearn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ml.metrics.epsilon import (
    epsilon_from_statistics,
    epsilon_hat,
    epsilon_hat_regression,
    gaussian_likelihood_ratios,
    hinge_statistic,
    json_number,
    nanmedian_rows,
    per_sample_epsilons,
    regression_statistic,
    statistic,
)
from ml.metrics.seed_layout import load_approach
from tests.epsilon_reference import (
    epsilon_hat_loop,
    hinge_loop,
    per_sample_epsilons_loop,
    study_labelled_epsilons,
)

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "seed-cifar10"
SKLEARN_EVERY_THRESHOLD = tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 7)
needs_modern_det_curve = pytest.mark.skipif(
    not SKLEARN_EVERY_THRESHOLD,
    reason="the loop reference needs sklearn >= 1.7, whose det_curve scores every threshold",
)

# Few distinct values so that ties, zero standard deviations, tiny spreads next to far-away values
# (densities underflowing to 0 and ratios of +inf) and perfectly separable samples all come up.
VALUES = st.sampled_from([-2.0, -1.0, 0.0, 0.001, 0.002, 0.5, 1.0, 3.0, 40.0])
DELTAS = st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5, 0.9, 0.99])


def golden() -> Path:
    """The study's published folder, or skip."""
    if not GOLDEN.is_dir():
        pytest.skip(f"the study's published logits are not at {GOLDEN}")
    return GOLDEN


@st.composite
def statistics(draw: st.DrawFn, equal_sizes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Reference [M_r, n] and unlearned [M_u, n] statistics; the unlearned ones sometimes shifted apart."""
    n = draw(st.integers(1, 5))
    m_r = draw(st.integers(1, 9))
    m_u = m_r if equal_sizes else draw(st.integers(1, 9))
    ref = draw(arrays(np.float64, (m_r, n), elements=VALUES))
    unl = draw(arrays(np.float64, (m_u, n), elements=VALUES)) + draw(st.sampled_from([0.0, 0.0, 100.0]))
    return ref, unl


@needs_modern_det_curve
@settings(max_examples=60, deadline=None)
@given(pair=statistics(), delta=DELTAS)
def test_vectorised_equals_loop_reference(pair: tuple[np.ndarray, np.ndarray], delta: float) -> None:
    ref, unl = pair
    ours = per_sample_epsilons(ref, unl, np.array([delta]))[0]
    expected = per_sample_epsilons_loop(ref, unl, delta)
    np.testing.assert_array_equal(ours, expected)
    result = epsilon_from_statistics(ref, unl, delta=delta)
    np.testing.assert_array_equal(result.epsilon_hat, epsilon_hat_loop(ref, unl, delta))
    assert result.n_infinite == int(np.isinf(expected).sum())
    assert result.n_nan == int(np.isnan(expected).sum())


@needs_modern_det_curve
@settings(max_examples=60, deadline=None)
@given(pair=statistics(equal_sizes=True), delta=DELTAS)
def test_equal_group_sizes_match_the_studys_labelling(
    pair: tuple[np.ndarray, np.ndarray], delta: float
) -> None:
    ref, unl = pair
    ours = per_sample_epsilons(ref, unl, np.array([delta]))[0]
    np.testing.assert_array_equal(ours, study_labelled_epsilons(ref, unl, delta))


@needs_modern_det_curve
@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(2, 4)),
    data=st.data(),
)
def test_logits_pipeline_equals_loop(shape: tuple[int, int, int, int], data: st.DataObject) -> None:
    m_r, m_u, n, c = shape
    logits = st.sampled_from([-1.0, 0.0, 0.5, 2.0, 7.0])
    ref = data.draw(arrays(np.float32, (m_r, n, c), elements=logits))
    unl = data.draw(arrays(np.float32, (m_u, n, c), elements=logits))
    labels = data.draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    np.testing.assert_array_equal(hinge_statistic(ref, labels), hinge_loop(ref, labels))
    result = epsilon_hat(ref, unl, labels)
    expected = per_sample_epsilons_loop(hinge_loop(ref, labels), hinge_loop(unl, labels), 0.05)
    np.testing.assert_array_equal(result.per_sample, expected)


def test_unequal_group_sizes_are_labelled_by_group() -> None:
    # The reference group (5 models) has the higher median score, so it is the positive class. Its two
    # outer values tie at ratio ~0, the two unlearned values tie in the middle and three reference values
    # tie on top: the only threshold with both rates non-zero admits all negatives and 3 of 5 positives.
    ref = np.array([[-10.0], [0.0], [0.0], [0.0], [10.0]])
    unl = np.array([[-1.0], [1.0]])
    expected = math.log(1 - 0.05 - 0.4 + 1e-8) - math.log(1 + 1e-8)
    ours = per_sample_epsilons(ref, unl, np.array([0.05]))[0]
    assert ours[0] == pytest.approx(expected, rel=1e-12)
    if SKLEARN_EVERY_THRESHOLD:
        assert per_sample_epsilons_loop(ref, unl, 0.05)[0] == ours[0]
        assert study_labelled_epsilons(ref, unl, 0.05)[0] != pytest.approx(ours[0])


def test_hand_computed_sample() -> None:
    # Fits N(1, 1) and N(2, 1): the ratio is exp(x - 1.5), increasing, so the unlearned group is positive
    # and the sorted labels are - + - +. Only the threshold at x = 2 keeps both rates non-zero: 1/2 and 1/2.
    result = epsilon_from_statistics(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]]))
    expected = math.log(1 - 0.05 - 0.5 + 1e-8) - math.log(0.5 + 1e-8)
    assert result.per_sample[0] == pytest.approx(expected, rel=1e-12)
    assert result.epsilon_hat == pytest.approx(-0.10536049, abs=1e-7)
    ref_scores, unl_scores = gaussian_likelihood_ratios(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]]))
    np.testing.assert_allclose(ref_scores[:, 0], np.exp([-1.5, 0.5]), rtol=1e-12)
    np.testing.assert_allclose(unl_scores[:, 0], np.exp([-0.5, 1.5]), rtol=1e-12)


def test_zero_std_is_a_point_mass() -> None:
    # Unlearned constant at 1: its fit is +inf density at 1 and 0 elsewhere.
    ref_scores, unl_scores = gaussian_likelihood_ratios(
        np.array([[0.0], [1.0], [2.0]]), np.array([[1.0], [1.0]])
    )
    assert ref_scores[:, 0].tolist() == [0.0, math.inf, 0.0]
    assert unl_scores[:, 0].tolist() == [math.inf, math.inf]
    # Reference constant: its values score 0 against a spread unlearned fit, unlearned values +inf.
    ref_scores, unl_scores = gaussian_likelihood_ratios(np.array([[5.0], [5.0]]), np.array([[0.0], [2.0]]))
    assert ref_scores[:, 0].tolist() == [0.0, 0.0]
    assert unl_scores[:, 0].tolist() == [math.inf, math.inf]


def test_identical_point_masses_score_one_and_give_nan() -> None:
    ref_scores, unl_scores = gaussian_likelihood_ratios(np.full((3, 1), 2.0), np.full((2, 1), 2.0))
    assert ref_scores[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert unl_scores[:, 0].tolist() == [1.0, 1.0]
    result = epsilon_from_statistics(np.full((3, 1), 2.0), np.full((2, 1), 2.0))
    assert math.isnan(result.epsilon_hat)
    assert (result.n_nan, result.n_infinite) == (1, 0)
    assert result.to_json()["epsilon_hat"] is None


def test_separate_point_masses_are_infinite() -> None:
    result = epsilon_from_statistics(np.zeros((4, 3)), np.ones((4, 3)))
    assert result.n_infinite == 3
    assert result.epsilon_hat == math.inf
    assert np.isinf(result.curve).all()
    assert result.to_json()["epsilon_hat"] == "inf"


def test_median_ignores_nan_and_counts_infinities() -> None:
    # Sample 0 separable (+inf), sample 1 identical point masses (NaN), sample 2 the hand example.
    ref = np.array([[0.0, 2.0, 0.0], [0.0, 2.0, 2.0]])
    unl = np.array([[1.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    result = epsilon_from_statistics(ref, unl)
    assert result.per_sample[0] == math.inf
    assert math.isnan(result.per_sample[1])
    assert result.epsilon_hat == math.inf  # median of {-0.105, +inf}
    assert (result.n_samples, result.n_infinite, result.n_nan) == (3, 1, 1)
    assert result.mean == math.inf
    assert math.isnan(result.ci95)


def test_summaries_follow_the_study() -> None:
    rng = np.random.default_rng(0)
    ref, unl = rng.normal(size=(12, 50)), rng.normal(0.3, 1.2, size=(9, 50))
    result = epsilon_from_statistics(ref, unl, delta=0.1)
    eps = result.per_sample
    assert np.isfinite(eps).all()
    assert result.epsilon_hat == np.median(eps)
    assert result.mean == pytest.approx(np.mean(eps), rel=1e-12)
    assert result.ci95 == pytest.approx(1.96 * np.std(eps) / math.sqrt(50), rel=1e-12)
    assert (result.n_reference, result.n_unlearned, result.delta) == (12, 9, 0.1)


def test_curve_over_delta() -> None:
    rng = np.random.default_rng(1)
    ref, unl = rng.normal(size=(20, 200)), rng.normal(0.5, 1.0, size=(20, 200))
    result = epsilon_from_statistics(ref, unl)
    assert result.deltas.shape == (100,) and result.curve.shape == (100,)
    assert result.deltas[0] == 0.0 and result.deltas[-1] == 0.99 and result.deltas[5] == 0.05
    assert result.curve[5] == result.epsilon_hat
    defined = result.curve[~np.isnan(result.curve)]
    assert defined.size > 90 and (np.diff(defined) <= 0).all()
    at_03 = epsilon_from_statistics(ref, unl, delta=0.3, curve_deltas=np.empty(0))
    assert at_03.curve.size == 0
    assert at_03.epsilon_hat == result.curve[30]


def test_nanmedian_rows_matches_numpy() -> None:
    values = np.array([[1.0, np.nan, 3.0, np.inf], [np.nan, np.nan, np.nan, np.nan], [2.0, 1.0, 4.0, 3.0]])
    np.testing.assert_array_equal(nanmedian_rows(values), [3.0, np.nan, 2.5])


def test_regression_statistic() -> None:
    predictions = np.array([[30.0, 41.0], [33.0, 38.0]])
    targets = np.array([31.0, 40.0])
    expected = np.array([[-1.0, -1.0], [-2.0, -2.0]])
    np.testing.assert_array_equal(regression_statistic(predictions, targets), expected)
    np.testing.assert_array_equal(regression_statistic(predictions[..., None], targets), expected)
    rng = np.random.default_rng(2)
    ref, unl, y = rng.normal(40, 5, (10, 30)), rng.normal(40, 5, (8, 30, 1)), rng.normal(40, 5, 30)
    result = epsilon_hat_regression(ref, unl, y)
    direct = epsilon_from_statistics(-np.abs(ref - y), -np.abs(unl[..., 0] - y))
    np.testing.assert_array_equal(result.per_sample, direct.per_sample)


def test_hinge_statistic() -> None:
    logits = np.array([[[2.0, 1.0, -1.0], [0.0, 3.0, 3.0]]])
    np.testing.assert_array_equal(hinge_statistic(logits, np.array([0, 2])), [[1.0, 0.0]])


def test_to_json_is_json_safe() -> None:
    result = epsilon_from_statistics(np.zeros((4, 3)), np.ones((4, 3)))
    data = result.to_json()
    assert list(data) == [
        "epsilon_hat",
        "mean",
        "ci95",
        "ci95_samples",
        "n_samples",
        "n_reference",
        "n_unlearned",
        "n_infinite",
        "n_nan",
        "epsilon_ceiling",
        "n_at_ceiling",
        "censored",
    ]
    assert data == {
        "epsilon_hat": "inf",
        "mean": "inf",
        "ci95": None,
        "ci95_samples": None,
        "n_samples": 3,
        "n_reference": 4,
        "n_unlearned": 4,
        "n_infinite": 3,
        "n_nan": 0,
        "epsilon_ceiling": pytest.approx(math.log((1 - 0.05 - 1 / 4) * 4), abs=1e-7),
        "n_at_ceiling": 0,
        "censored": True,
    }
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert [json_number(v) for v in (1.5, -math.inf, math.nan)] == [1.5, "-inf", None]


@pytest.mark.parametrize(
    ("ref", "unl", "labels", "message"),
    [
        (np.zeros((2, 3, 4)), np.zeros((2, 4, 4)), np.zeros(3, int), "same samples"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.zeros(2, int), "labels must be"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.full(3, 4), r"\[0, 4\)"),
        (np.full((2, 3, 4), np.nan), np.zeros((2, 3, 4)), np.zeros(3, int), "finite"),
        (np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), np.zeros(3, int), "2 classes"),
        (np.zeros((0, 3, 4)), np.zeros((2, 3, 4)), np.zeros(3, int), "models >= 1"),
    ],
)
def test_bad_inputs_raise(ref: np.ndarray, unl: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        epsilon_hat(ref, unl, labels)


@pytest.mark.parametrize("delta", [-0.1, 1.0, math.nan])
def test_delta_out_of_range_raises(delta: float) -> None:
    with pytest.raises(ValueError, match="delta"):
        epsilon_from_statistics(np.zeros((2, 2)), np.ones((2, 2)), delta=delta)


@pytest.mark.parametrize(
    ("approach", "published", "ours", "infinite", "groups"),
    [("baseline", 0.875, 0.8754687, 0, 40), ("finetune", 3.738, 3.7376688, 30, 80)],
)
def test_reproduces_the_studys_published_values(
    approach: str, published: float, ours: float, infinite: int, groups: int
) -> None:
    data = load_approach(golden(), approach)
    result = epsilon_hat(data.reference_logits, data.unlearned_logits, data.labels)
    assert result.epsilon_hat == pytest.approx(published, abs=1e-3)
    assert result.epsilon_hat == pytest.approx(ours, abs=1e-7)
    assert (result.n_samples, result.n_reference, result.n_unlearned) == (1000, groups, groups)
    assert (result.n_infinite, result.n_nan) == (infinite, 0)
    assert result.curve[5] == result.epsilon_hat


@needs_modern_det_curve
@pytest.mark.parametrize("approach", ["baseline", "poison"])
def test_published_logits_match_loop_on_a_slice(approach: str) -> None:
    data = load_approach(golden(), approach)
    sl = slice(0, 25)
    ref = hinge_statistic(data.reference_logits[:, sl], data.labels[sl])
    unl = hinge_statistic(data.unlearned_logits[:, sl], data.labels[sl])
    np.testing.assert_array_equal(
        epsilon_hat(data.reference_logits, data.unlearned_logits, data.labels).per_sample[sl],
        per_sample_epsilons_loop(ref, unl, 0.05),
    )


def test_the_statistic_follows_the_task() -> None:
    """A classifier's hinge (true logit over the best other) and a regressor's -|error|, per model."""
    logits_ = np.array([[[2.0, 0.5, 1.0]], [[0.0, 3.0, 1.0]]])
    assert statistic(logits_, np.array([0]), "classification").tolist() == [[1.0], [-3.0]]
    predictions = np.array([[1.5, 4.0]])
    assert statistic(predictions, np.array([2.0, 3.0]), "regression").tolist() == [[-0.5, -1.0]]
    with pytest.raises(ValueError, match="models, samples, classes"):
        statistic(predictions, np.array([0, 1]), "classification")
