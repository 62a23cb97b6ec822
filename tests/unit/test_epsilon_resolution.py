"""Resolution of epsilon-hat: the ceiling against brute force, the bootstrap over models, the smooth estimator."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from scipy.stats import norm

from ml.metrics.epsilon import (
    _epsilons_fixed_groups,
    epsilon_ceiling,
    epsilon_from_statistics,
    epsilon_hat,
    hinge_statistic,
)
from ml.metrics.resolution import (
    bootstrap_excess,
    bootstrap_models,
    bootstrap_replicates,
    epsilon_hat_smooth,
    excess_interval,
    excess_replicates,
    models_for_ceiling,
    null_epsilon,
    order_statistic_interval,
    resolution,
    smooth_per_sample,
)
from ml.metrics.seed_layout import list_approaches, load_approach
from tests.unit.test_epsilon import DELTAS, statistics


def brute_force_ceiling(n_ref: int, n_unl: int, delta: float) -> float:
    """Largest finite per-sample epsilon over every order of the two groups' scores, either group positive."""
    total = n_ref + n_unl
    best = -math.inf
    for positive_size in {n_ref, n_unl}:
        positive = np.arange(total) < positive_size
        orders = list(itertools.combinations(range(total), positive_size))
        # Row k places the positives at the sorted positions orders[k] and the negatives elsewhere.
        scores = np.empty((len(orders), total))
        for k, where in enumerate(orders):
            rest = np.setdiff1d(np.arange(total), where)
            scores[k, :positive_size], scores[k, positive_size:] = where, rest
        eps = _epsilons_fixed_groups(scores, positive, np.array([delta]))[0]
        finite = eps[np.isfinite(eps)]
        if finite.size:
            best = max(best, float(finite.max()))
    return math.nan if best == -math.inf else best


@pytest.mark.parametrize("delta", [0.0, 0.05, 0.3])
def test_ceiling_is_the_largest_finite_value_over_all_arrangements(delta: float) -> None:
    for n_ref, n_unl in itertools.product(range(1, 7), repeat=2):
        expected = brute_force_ceiling(n_ref, n_unl, delta)
        got = epsilon_ceiling(n_ref, n_unl, delta)
        if math.isnan(expected):
            assert math.isnan(got), (n_ref, n_unl)
        else:
            assert got == expected, (n_ref, n_unl, got, expected)


def test_ceiling_values_of_the_issue() -> None:
    assert epsilon_ceiling(8, 8) == pytest.approx(math.log((1 - 0.05 - 1 / 8) * 8), abs=1e-7)
    assert [round(epsilon_ceiling(n, n), 3) for n in (8, 6, 4, 80)] == [1.887, 1.548, 1.030, 4.317]
    assert epsilon_ceiling(3, 5) == epsilon_ceiling(5, 3)
    assert math.isnan(epsilon_ceiling(1, 1))
    with pytest.raises(ValueError):
        epsilon_ceiling(0, 3)


@settings(max_examples=80, deadline=None)
@given(pair=statistics(), delta=DELTAS)
def test_no_finite_sample_exceeds_the_ceiling(pair: tuple[np.ndarray, np.ndarray], delta: float) -> None:
    ref, unl = pair
    result = epsilon_from_statistics(ref, unl, delta=delta, curve_deltas=np.empty(0))
    finite = result.per_sample[np.isfinite(result.per_sample)]
    if math.isnan(result.epsilon_ceiling):
        assert finite.size == 0
    else:
        assert (finite <= result.epsilon_ceiling).all()
        assert result.n_at_ceiling == int((finite == result.epsilon_ceiling).sum())


def test_samples_at_the_ceiling_are_counted_and_censor_the_median() -> None:
    # Per sample: reference 0..7, unlearned 1..8 shifted so one model of each group is on the wrong side.
    ref = np.tile(np.arange(8.0)[:, None], (1, 5))
    unl = ref + np.array([100.0, 100.0, 100.0, 0.5, 0.5])  # three separable samples, two overlapping
    result = epsilon_from_statistics(ref, unl)
    assert result.n_infinite == 3 and result.censored
    assert (
        result.to_json()["censored"] is True and result.to_json()["epsilon_ceiling"] == result.epsilon_ceiling
    )
    wrong_side = np.vstack([np.arange(7.0)[:, None] + 10, [[0.0]]])  # one reference model far below
    one = epsilon_from_statistics(np.arange(8.0)[:, None] + [[0.0]], wrong_side)
    assert one.per_sample[0] <= one.epsilon_ceiling
    spread = epsilon_from_statistics(
        np.random.default_rng(0).normal(size=(40, 50)), np.random.default_rng(1).normal(size=(40, 50))
    )
    assert not spread.censored and spread.n_at_ceiling == 0


def test_ci95_samples_is_the_per_sample_spread() -> None:
    rng = np.random.default_rng(0)
    result = epsilon_from_statistics(rng.normal(size=(10, 30)), rng.normal(0.5, 1, size=(10, 30)))
    data = result.to_json()
    assert (
        data["ci95_samples"]
        == data["ci95"]
        == pytest.approx(1.96 * np.std(result.per_sample) / math.sqrt(30))
    )


def test_order_statistic_interval_handles_infinities_and_nan() -> None:
    assert order_statistic_interval(np.array([1.0, 2.0, np.inf, np.inf, np.nan])) == (1.0, math.inf)
    assert order_statistic_interval(np.full(10, np.inf)) == (math.inf, math.inf)
    low, high = order_statistic_interval(np.arange(1001.0))
    assert (low, high) == (25.0, 975.0)
    assert all(math.isnan(v) for v in order_statistic_interval(np.array([np.nan])))


def test_bootstrap_replicates_are_the_exact_estimator_on_resampled_models() -> None:
    rng = np.random.default_rng(3)
    ref, unl = rng.normal(size=(8, 30)), rng.normal(0.4, 1.3, size=(6, 30))
    reps = bootstrap_replicates(ref, unl, n_boot=50, seed=7)
    draw = np.random.default_rng(7)
    ref_idx, unl_idx = draw.integers(0, 8, size=(50, 8)), draw.integers(0, 6, size=(50, 6))
    for k in (0, 17, 49):
        direct = epsilon_from_statistics(ref[ref_idx[k]], unl[unl_idx[k]], curve_deltas=np.empty(0))
        assert reps[k] == direct.epsilon_hat
    np.testing.assert_array_equal(reps, bootstrap_replicates(ref, unl, n_boot=50, seed=7))
    assert not np.array_equal(reps, bootstrap_replicates(ref, unl, n_boot=50, seed=8))


def test_bootstrap_interval_keeps_infinite_replicates() -> None:
    rng = np.random.default_rng(0)
    ref, unl = rng.normal(size=(8, 30)), rng.normal(size=(8, 30))
    unl[:, :20] += 50  # two thirds of the samples separable: every replicate's median is infinite
    interval = bootstrap_models(ref, unl, n_boot=200)
    assert (interval.low, interval.high, interval.n_infinite, interval.n_boot) == (
        math.inf,
        math.inf,
        200,
        200,
    )
    close = bootstrap_models(ref, rng.normal(0.3, 1, size=(8, 30)), n_boot=200)
    assert close.low < close.high < math.inf and close.n_infinite == 0


def test_bootstrap_replicate_count_shrinks_for_large_inputs() -> None:
    rng = np.random.default_rng(0)
    assert bootstrap_models(rng.normal(size=(4, 10)), rng.normal(size=(4, 10))).n_boot == 1000
    big = rng.normal(size=(100, 1500))
    assert bootstrap_models(big, big + 0.1, n_boot=None).n_boot == 100


def numerical_smooth(mu_r: float, s_r: float, mu_u: float, s_u: float, delta: float) -> float:
    """The LR test's epsilon by brute force: every point of a fine x grid as threshold, rates by Riemann sums."""
    lo, hi = min(mu_r - 12 * s_r, mu_u - 12 * s_u), max(mu_r + 12 * s_r, mu_u + 12 * s_u)
    x = np.linspace(lo, hi, 400_001)
    dx = x[1] - x[0]
    log_lr = norm.logpdf(x, mu_u, s_u) - norm.logpdf(x, mu_r, s_r)
    order = np.argsort(-log_lr, kind="stable")
    p_r, p_u = norm.pdf(x[order], mu_r, s_r) * dx, norm.pdf(x[order], mu_u, s_u) * dx
    fpr = np.cumsum(p_r)  # accepting the k highest-ratio points
    fnr = np.concatenate([np.cumsum(p_u[::-1])[::-1][1:], [0.0]])
    with np.errstate(all="ignore"):
        eps = np.fmax(
            np.log(1 - delta - fpr + 1e-8) - np.log(fnr + 1e-8),
            np.log(1 - delta - fnr + 1e-8) - np.log(fpr + 1e-8),
        )
    return float(np.nanmax(eps))


@pytest.mark.parametrize(
    ("mu_r", "s_r", "mu_u", "s_u"),
    [
        (0.0, 1.0, 1.0, 1.0),  # equal stds: a half-line
        (0.0, 1.0, -2.5, 1.0),
        (0.0, 1.0, 0.5, 2.0),  # unlearned wider: outside an interval
        (3.0, 2.0, 4.0, 0.5),  # unlearned narrower: an interval
        (0.0, 1.0, 1.0, 1.001),  # nearly equal stds: the interval's far end is far away
        (0.0, 1.0, 0.0, 1.5),  # same means, different spreads
    ],
)
@pytest.mark.parametrize("delta", [0.0, 0.05, 0.3])
def test_smooth_equals_brute_force_lr_test(
    mu_r: float, s_r: float, mu_u: float, s_u: float, delta: float
) -> None:
    # Two-model groups whose fits are exactly the given Gaussians (values mean +- std).
    ref = np.array([[mu_r - s_r], [mu_r + s_r]])
    unl = np.array([[mu_u - s_u], [mu_u + s_u]])
    ours = smooth_per_sample(ref, unl, delta)[0]
    assert ours == pytest.approx(numerical_smooth(mu_r, s_r, mu_u, s_u, delta), abs=2e-3)


def test_smooth_closed_form_for_equal_stds() -> None:
    # Half-line x >= k: FPR = 1 - Phi(k), FNR = Phi(k - d); the study's expression maximised over k.
    k = np.linspace(-10, 12, 2_000_001)
    d, delta = 1.7, 0.05
    fpr, fnr = norm.sf(k), norm.cdf(k - d)
    with np.errstate(all="ignore"):
        best = np.nanmax(
            np.fmax(
                np.log(1 - delta - fpr + 1e-8) - np.log(fnr + 1e-8),
                np.log(1 - delta - fnr + 1e-8) - np.log(fpr + 1e-8),
            )
        )
    ours = smooth_per_sample(np.array([[-1.0], [1.0]]), np.array([[d - 1], [d + 1]]), delta)[0]
    assert ours == pytest.approx(best, abs=1e-9)


def test_smooth_point_masses_and_identical_fits() -> None:
    ref = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 2.0, 2.0]])
    unl = np.array([[2.0, 1.0, 5.0, 0.0], [2.0, 1.0, 5.0, 2.0]])
    out = smooth_per_sample(ref, unl)
    assert out[0] == math.inf and math.isnan(out[1]) and out[2] == math.inf and math.isnan(out[3])


def test_smooth_is_finite_at_small_n_where_the_study_is_censored() -> None:
    rng = np.random.default_rng(0)
    ref, unl = rng.normal(size=(4, 200)), rng.normal(3, 1, size=(4, 200))
    exact = epsilon_from_statistics(ref, unl, curve_deltas=np.empty(0))
    assert exact.censored
    smooth = epsilon_hat_smooth(ref, unl)
    assert math.isfinite(smooth) and smooth > exact.epsilon_ceiling


def test_models_for_ceiling() -> None:
    for target in (0.5, 1.0, 1.887, 3.0, 4.3):
        n = models_for_ceiling(target)
        assert epsilon_ceiling(n, n) >= target > epsilon_ceiling(n - 1, n - 1)
    assert models_for_ceiling(1.8870695811535954) == 8
    assert models_for_ceiling(math.inf) is None and models_for_ceiling(30.0) is None


def test_resolution_report_says_when_censored() -> None:
    rng = np.random.default_rng(0)
    ref, unl = rng.normal(size=(4, 60)), rng.normal(1.5, 1, size=(4, 60))
    exact = epsilon_from_statistics(ref, unl, curve_deltas=np.empty(0))
    report = resolution(exact, ref, unl, n_boot=100).to_json()
    assert report["censored"] is True
    n = report["models_to_resolve"]
    assert n > 4 and epsilon_ceiling(n, n) > max(report["epsilon_hat_smooth"], exact.epsilon_ceiling)
    assert (
        report["resolution_note"].startswith("censored")
        and f"{n} models per group" in report["resolution_note"]
    )
    wide = rng.normal(size=(30, 60))
    exact = epsilon_from_statistics(wide, rng.normal(size=(30, 60)), curve_deltas=np.empty(0))
    report = resolution(exact, wide, rng.normal(size=(30, 60)), n_boot=100).to_json()
    assert report["censored"] is False and report["models_to_resolve"] is None
    assert report["resolution_note"].startswith("resolved")
    low, high = report["epsilon_hat_ci95_models"]
    assert low <= high


STUDY_ORDER = [
    "baseline",
    "prune_complex",
    "prune_last_layer",
    "hybrid",
    "prune",
    "activation_reset",
    "finetune",
    "poison",
    "poison_full",
]


@pytest.mark.slow
def test_smooth_ranks_the_studys_approaches_on_published_logits(golden_dir: Path) -> None:
    folder = golden_dir
    study, smooth = {}, {}
    for name in list_approaches(folder):
        data = load_approach(folder, name)
        study[name] = epsilon_hat(data.reference_logits, data.unlearned_logits, data.labels).epsilon_hat
        smooth[name] = epsilon_hat_smooth(
            hinge_statistic(data.reference_logits, data.labels),
            hinge_statistic(data.unlearned_logits, data.labels),
        )
    assert sorted(study, key=study.get) == STUDY_ORDER
    discordant = {
        (a, b)
        for a, b in itertools.combinations(STUDY_ORDER, 2)
        if (smooth[a] - smooth[b]) * (study[a] - study[b]) < 0
    }
    # Measured: the smooth estimator agrees on 33 of 36 pairs (Kendall tau 0.83); it swaps the two prune
    # variants, which the study's own bootstrap intervals do not separate, and puts poison_full below
    # finetune and poison, the heaviest-tailed approaches, where Gaussian tails drive it to ~15-18.
    assert discordant == {
        ("prune_complex", "prune_last_layer"),
        ("finetune", "poison_full"),
        ("poison", "poison_full"),
    }
    assert min(smooth, key=smooth.get) == "baseline"


def test_retrain_against_retrain_is_censored_below_five_models() -> None:
    assert [null_epsilon(n, n).censored for n in (2, 3, 4, 5, 6, 8)] == [True] * 3 + [False] * 3
    # Close to the study's two halves of its 80 retrained models (0.875): the Gaussian null is realistic.
    assert null_epsilon(40, 40).epsilon_hat == pytest.approx(0.875, abs=0.06)


@pytest.mark.slow
def test_at_eight_models_the_smooth_estimator_ranks_like_the_study_at_eighty(golden_dir: Path) -> None:
    # Measured over 4 draws: the smooth estimator at 8 models per group orders every pair as the study's
    # 80-model figure does except poison / poison_full (4.159 vs 4.205, within each other's bootstrap
    # intervals); the study's own figure at 8 models ties or reverses 4-5 of the 36 pairs.
    stats = {}
    for name in STUDY_ORDER:
        data = load_approach(golden_dir, name)
        stats[name] = (
            hinge_statistic(data.reference_logits, data.labels),
            hinge_statistic(data.unlearned_logits, data.labels),
        )
    for seed in range(2):
        rng = np.random.default_rng(seed)
        smooth, study = {}, {}
        for name, (ref, unl) in stats.items():
            r, u = (
                ref[rng.choice(ref.shape[0], 8, replace=False)],
                unl[rng.choice(unl.shape[0], 8, replace=False)],
            )
            smooth[name] = epsilon_hat_smooth(r, u)
            study[name] = epsilon_from_statistics(r, u, curve_deltas=np.empty(0)).epsilon_hat
        pairs = list(itertools.combinations(STUDY_ORDER, 2))
        assert {(a, b) for a, b in pairs if smooth[a] >= smooth[b]} <= {("poison", "poison_full")}
        assert sum(study[a] >= study[b] for a, b in pairs) >= 4


def test_smooth_blocks_of_samples_give_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import ml.metrics.resolution as resolution_module

    rng = np.random.default_rng(4)
    ref, unl = rng.normal(size=(5, 11)), rng.normal(0.7, 1.4, size=(6, 11))
    ref[:, 3] = 1.0  # a point mass in the middle of a block
    whole = smooth_per_sample(ref, unl)
    monkeypatch.setattr(resolution_module, "_SMOOTH_BLOCK", 3)
    np.testing.assert_array_equal(smooth_per_sample(ref, unl), whole)
    assert whole[3] == math.inf and np.isfinite(np.delete(whole, 3)).all()


def test_bootstrap_excess_replicates_share_one_reference_and_one_model_draw() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(32, 20))
    retrain, finetune = rng.normal(size=(30, 20)), rng.normal(1.2, 1, size=(30, 20))
    method = rng.normal(0.5, 1, size=(30, 20))
    interval = bootstrap_excess(ref, method, retrain, finetune, n_boot=40, seed=3)
    draw = np.random.default_rng(3)
    ref_idx, idx = draw.integers(0, 32, size=(40, 32)), draw.integers(0, 30, size=(40, 30))
    ratios = []
    for k in range(40):
        eps = [
            epsilon_from_statistics(ref[ref_idx[k]], g[idx[k]], curve_deltas=np.empty(0)).epsilon_hat
            for g in (method, retrain, finetune)
        ]
        assert eps[2] > eps[1]  # finetune sits far above retrain here: every replicate resolves
        ratios.append((eps[0] - eps[1]) / (eps[2] - eps[1]))
    assert (interval.low, interval.high) == order_statistic_interval(np.array(ratios))
    assert interval.n_boot == 40 and interval.n_unresolved == 0
    point = [epsilon_from_statistics(ref, g).epsilon_hat for g in (method, retrain, finetune)]
    assert interval.low < (point[0] - point[1]) / (point[2] - point[1]) < interval.high < 1


def test_bootstrap_excess_unresolved_replicates_open_the_interval() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(10, 15))
    same = [rng.normal(size=(10, 15)) for _ in range(3)]  # finetune no farther than retrain: no scale
    interval = bootstrap_excess(ref, *same, n_boot=200)
    assert interval.n_unresolved > 10  # more than either tail's 5 replicates
    assert (interval.low, interval.high) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="as many models each"):
        bootstrap_excess(ref, same[0][:8], same[1], same[2])


def test_pooled_excess_resolves_a_replicate_one_forget_set_alone_cannot() -> None:
    gap, scale = np.linspace(0.0, 0.4, 41), np.ones(41)  # 41 replicates: the 2nd and 40th are the ends
    first = excess_interval(gap, scale)
    assert (first.low, first.high, first.n_boot, first.n_unresolved) == (0.01, 0.39, 41, 0)
    # A second forget set whose finetune fell below retrain in 5 replicates: alone, it says nothing.
    scale2 = np.where(np.arange(41) < 5, -0.5, 1.0)
    alone = excess_interval(np.zeros(41), scale2)
    assert (alone.low, alone.high, alone.n_unresolved) == (-math.inf, math.inf, 5)
    # Pooled, each replicate's distances add up: the second set's scale is outweighed, its zero gap halves.
    pooled = excess_interval(gap, scale + scale2)
    ratios = np.sort(gap / (scale + scale2))
    assert pooled.n_unresolved == 0 and (pooled.low, pooled.high) == (ratios[1], ratios[39])
    # A censored finetune (infinite distance) is no scale: the method's ratio to it would read 0.
    censored = excess_interval(gap, np.where(np.arange(41) < 3, np.inf, 1.0))
    assert (censored.low, censored.high, censored.n_unresolved) == (-math.inf, math.inf, 3)
    rng = np.random.default_rng(2)
    groups = [rng.normal(m, 1, size=(12, 9)) for m in (0.0, 0.3, 0.0, 1.0)]
    assert bootstrap_excess(*groups, n_boot=30, seed=4) == excess_interval(
        *excess_replicates(*groups, n_boot=30, seed=4)
    )
