"""Scoring a set of runs: classification and regression (AgeDB ages report mean absolute errors)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.utils import configure
from worker.evaluation import save_array, score_runs, spread


@pytest.fixture
def store(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path)


def _runs(prefix: str, outputs: list[np.ndarray], metrics: list[dict]) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(id=f"{prefix}{i}", outputs=save_array(f"runs/{prefix}{i}.npy", out), metrics=m)
        for i, (out, m) in enumerate(zip(outputs, metrics, strict=True))
    ]


def test_regression_runs_are_scored_with_absolute_errors(store):
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 70, size=12).astype(np.float32)
    mae = [
        {"retain_mae": 5.0 + i, "forget_mae": 6.0, "test_mae": 7.0, "wall_seconds": 10.0} for i in range(4)
    ]
    fast = [{**m, "wall_seconds": 1.0} for m in mae]
    refs = _runs("r", [ages + rng.normal(0, 3, 12).astype(np.float32) for _ in range(4)], mae)
    # Unlearned models that still predict the forget ages almost exactly: they did not forget.
    unls = _runs("u", [ages + rng.normal(0, 0.01, 12).astype(np.float32) for _ in range(4)], fast)
    results, eps, ref_stat, _ = score_runs("regression", ages, refs, unls, 0.05)
    assert results["neurips"] is None and results["kl_to_reference"] is None
    assert "retain_accuracy" not in results and "mia_efficacy" not in results
    assert results["retain_mae"] == {
        "mean": 6.5,
        "ci95": pytest.approx(1.96 * np.std([5, 6, 7, 8]) / 2),
        "n": 4,
    }
    assert results["reference"]["test_mae"]["mean"] == 7.0
    assert results["cost_vs_retrain"] == pytest.approx(0.1)
    assert results["n_samples"] == 12 and results["n_reference"] == results["n_unlearned"] == 4
    assert eps.epsilon_hat > 1.0  # the near-exact predictions stand out from the retrained ones
    assert np.all(ref_stat <= 0)  # the statistic is the negative absolute error


def test_classification_runs_match_the_metric_module(store):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=20)
    acc = {"retain_accuracy": 0.9, "forget_accuracy": 0.8, "test_accuracy": 0.85, "wall_seconds": 2.0}
    refs = _runs("r", [rng.normal(size=(20, 3)).astype(np.float32) for _ in range(3)], [acc] * 3)
    unls = _runs("u", [rng.normal(size=(20, 3)).astype(np.float32) for _ in range(3)], [acc] * 3)
    results, eps, _, _ = score_runs("classification", labels, refs, unls, 0.05)
    assert results["epsilon_hat"] == pytest.approx(eps.epsilon_hat)
    assert results["neurips"]["n_reference"] == 3
    assert results["retain_accuracy"] == {"mean": 0.9, "ci95": 0.0, "n": 3}
    assert results["reference_run_ids"] == ["r0", "r1", "r2"]
    assert results["kl_to_reference"] > 0  # two unrelated sets of logits disagree
    assert results["mia_efficacy"] == {"mean": None, "ci95": None, "n": 0}  # these runs did not measure it


def test_spread_ignores_missing_values():
    assert spread([]) == {"mean": None, "ci95": None, "n": 0}
    assert spread([1.0, None, 3.0]) == {"mean": 2.0, "ci95": pytest.approx(1.96 / np.sqrt(2)), "n": 2}
