"""The leaderboard benchmark runs end to end with tiny settings, so a broken script is caught before a long run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ml.metrics.epsilon import epsilon_ceiling
from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow

METHODS = ("none", "finetune", "retrain")


def test_leaderboard_prints_one_scored_line_per_method(tmp_path: Path) -> None:
    out_file = tmp_path / "results" / "leaderboard.jsonl"
    done = run_benchmark(
        "bench_leaderboard.py",
        "--methods",
        ",".join(METHODS),
        "--n-models",
        "3",
        "--epochs",
        "1",
        "--width",
        "4",
        "--train-size",
        "600",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--pack",
        "2",
        "--out",
        str(out_file),
        "--markdown",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout.splitlines()
    records = [json.loads(line) for line in out if line.startswith("{")]
    assert [json.loads(line) for line in out_file.read_text().splitlines()] == records  # the file has it all
    setup = records[0]
    assert setup["bench"] == "leaderboard" and setup["n_models"] == 3 and setup["threads"] == 1
    assert setup["n_train"] == 600 and setup["forget"] == 60 and setup["pack"] == 2
    # Packs of 2 then 1: every group is scored after seed 2 (partial) and again after seed 3.
    partial = [r for r in records if "method" in r and r["partial"]]
    assert [r["method"] for r in partial] == list(METHODS)
    assert all(r["n_reference"] == r["n_unlearned"] == 2 for r in partial)
    final = [r for r in records if "method" in r and not r["partial"]]
    assert [r["method"] for r in final] == list(METHODS)
    assert [r["n_models"] for r in records if r.get("reference")] == [2, 3]
    by_method = {r["method"]: r for r in final}
    assert list(by_method) == list(METHODS)
    for name, record in by_method.items():
        assert "epsilon_hat" in record, record
        assert record["n_reference"] == record["n_unlearned"] == 3
        assert record["epsilon_ceiling"] == pytest.approx(epsilon_ceiling(3, 3))  # 0.615 with 3 + 3 models
        assert len(record["epsilon_hat_ci95_models"]) == 2 and isinstance(record["censored"], bool)
        assert record["n_at_ceiling"] + record["n_infinite"] <= record["n_samples"]
        for key in ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_efficacy"):
            assert record[key]["n"] == 3 and math.isfinite(record[key]["mean"]), (name, key)
            assert 0 <= record[key]["mean"] <= 1, (name, key)
        assert record["neurips"] is not None and 0 <= record["neurips"]["score"] <= 1
        assert math.isfinite(record["kl_to_reference"]) and record["time_vs_retrain"] > 0
    assert by_method["none"]["budget_vs_retrain"] == 0 and by_method["retrain"]["budget_vs_retrain"] == 1
    assert by_method["none"]["n_infinite"] == by_method["none"]["n_samples"]  # every run is the same model
    assert by_method["none"]["censored"] and by_method["none"]["epsilon_hat_ci95_models"] == ["inf", "inf"]
    table = [line for line in out if line.startswith("| `")]
    assert len(table) == len(METHODS)
