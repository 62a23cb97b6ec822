"""Scored evaluations carry the resolution of their epsilon-hat: ceiling, censoring, bootstrap, smooth estimate."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ml.metrics.epsilon import epsilon_ceiling, hinge_statistic
from ml.metrics.resolution import bootstrap_models, epsilon_hat_smooth, null_epsilon
from tests.utils import configure
from worker.evaluation import save_array, score_runs


@pytest.fixture
def store(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path)


def _runs(prefix: str, outputs: list[np.ndarray]) -> list[SimpleNamespace]:
    acc = {"retain_accuracy": 0.9, "forget_accuracy": 0.8, "test_accuracy": 0.85, "wall_seconds": 2.0}
    return [
        SimpleNamespace(id=f"{prefix}{i}", outputs=save_array(f"runs/{prefix}{i}.npy", out), metrics=acc)
        for i, out in enumerate(outputs)
    ]


def test_results_state_resolution_interval_and_smooth_estimate(store):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=25)
    ref_out = [rng.normal(size=(25, 3)).astype(np.float32) for _ in range(5)]
    unl_out = [rng.normal(size=(25, 3)).astype(np.float32) for _ in range(5)]
    results, eps, ref_stat, unl_stat = score_runs(
        "classification", labels, _runs("r", ref_out), _runs("u", unl_out), 0.05
    )
    assert results["epsilon_ceiling"] == pytest.approx(epsilon_ceiling(5, 5))
    assert results["n_at_ceiling"] == eps.n_at_ceiling and results["censored"] == eps.censored
    interval = bootstrap_models(ref_stat, unl_stat)
    assert results["epsilon_hat_ci95_models"] == [interval.low, interval.high]
    assert results["bootstrap_replicates"] == 1000
    assert results["epsilon_hat_smooth"] == pytest.approx(epsilon_hat_smooth(ref_stat, unl_stat))
    assert results["ci95_samples"] == results["ci95"]
    assert results["epsilon_hat_retrain"] == pytest.approx(null_epsilon(5, 5).epsilon_hat)
    assert results["resolution_note"].split(":")[0] in ("resolved", "censored")
    np.testing.assert_array_equal(ref_stat, hinge_statistic(np.stack(ref_out), labels))
    json.dumps(results, allow_nan=False)


def test_separable_groups_are_censored_with_words(store):
    rng = np.random.default_rng(3)
    labels = np.zeros(10, dtype=np.int64)
    ref_out = [rng.normal(size=(10, 2)).astype(np.float32) for _ in range(3)]
    unl_out = [(rng.normal(size=(10, 2)) + np.array([20.0, 0.0])).astype(np.float32) for _ in range(3)]
    results, *_ = score_runs("classification", labels, _runs("r", ref_out), _runs("u", unl_out), 0.05)
    assert results["epsilon_hat"] == "inf" and results["censored"] is True
    assert results["epsilon_hat_ci95_models"] == ["inf", "inf"]
    assert results["resolution_note"].startswith("censored")
