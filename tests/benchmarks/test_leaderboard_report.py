"""The leaderboard's packed runs match the methods they stand for, and its report ranks what the files hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ml.data import load_dataset
from ml.methods import UnlearnData, run_method
from ml.models import build_model
from ml.specs import ArchSpec, default_recipe
from tests.benchmarks import run_benchmark
from tests.conftest import REPO


@pytest.fixture
def leaderboard(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import bench_leaderboard

    return bench_leaderboard


def _line(method: str, eps: float | str, smooth: float, *, n: int = 32, partial: bool = False) -> dict:
    spread = {"mean": 0.9, "ci95": 0.01, "n": n}
    return {
        "method": method,
        "epsilon_hat": eps,
        "epsilon_hat_smooth": smooth,
        "epsilon_hat_ci95_models": [eps, eps],
        "epsilon_ceiling": 3.0,
        "censored": eps == "inf",
        "n_at_ceiling": 0,
        "n_infinite": 0,
        "n_samples": 10,
        "n_reference": n,
        "n_unlearned": n,
        "neurips": None,
        "retain_accuracy": spread,
        "forget_accuracy": spread,
        "test_accuracy": spread,
        "mia_efficacy": spread,
        "kl_to_reference": 0.1,
        "time_vs_retrain": 0.5,
        "budget_vs_retrain": 0.5,
        "partial": partial,
    }


def _write(path: Path, seed: int, lines: list[dict]) -> str:
    spread = {"mean": 0.9, "ci95": 0.01, "n": 32}
    reference = {"reference": True, **{k: spread for k in ("retain_accuracy", "forget_accuracy")}}
    reference |= {"test_accuracy": spread, "mia_efficacy": spread}
    records = [{"bench": "leaderboard", "dataset": "digits", "seed": seed}, reference, *lines]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_stability_counts_ties_and_ranks_infinity_last(leaderboard: Any) -> None:
    # Ranks a < d < b < inf against a < b < d < inf: one pair of four swapped.
    a = [_line("a", 1.0, 1.1), _line("b", 2.0, 2.2), _line("c", "inf", 3.0), _line("d", 1.5, 1.4)]
    b = [_line("a", 1.2, 1.0), _line("b", 1.9, 2.0), _line("c", "inf", 5.0), _line("d", 2.5, 1.5)]
    out = leaderboard.stability(a, b)
    assert out["epsilon_hat"]["spearman"] == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert out["epsilon_hat"]["kendall_tau_b"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert out["epsilon_hat_smooth"]["spearman"] == pytest.approx(1.0)
    # Two methods infinite in both runs tie, and tau-b counts the tie rather than ordering it.
    a.append(_line("e", "inf", 4.0))
    b.append(_line("e", "inf", 4.0))
    assert leaderboard.stability(a, b)["epsilon_hat"]["kendall_tau_b"] < 1
    # An undefined figure leaves its method out of that figure only.
    a.append(_line("f", None, 6.0))
    b.append(_line("f", 0.5, 6.0))
    out = leaderboard.stability(a, b)
    assert out["epsilon_hat"]["n_methods"] == 5 and out["epsilon_hat_smooth"]["n_methods"] == 6


def test_report_reads_each_methods_last_line_and_prints_stability(tmp_path: Path) -> None:
    first = _write(
        tmp_path / "a.jsonl",
        0,
        [_line("x", 9.0, 9.0, n=8, partial=True), _line("x", 1.0, 1.0), _line("y", 2.0, 2.0)],
    )
    second = _write(tmp_path / "b.jsonl", 1, [_line("x", 2.0, 1.0), _line("y", 1.0, 2.0)])
    done = run_benchmark("bench_leaderboard.py", "--report", first, second, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 4 and "32 models per group" in done.stdout
    assert rows[0].startswith("| `x` | 1.000") and rows[1].startswith("| `y` | 2.000")  # not the partial 9.0
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["bench"] == "leaderboard_stability" and last["methods"] == ["x", "y"]
    assert last["epsilon_hat"]["spearman"] == pytest.approx(-1.0)
    assert last["epsilon_hat_smooth"]["spearman"] == pytest.approx(1.0)


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize("method", ["retrain", "finetune", "hybrid", "activation_reset", "prune_last_layer"])
def test_packed_runs_are_the_methods_runs(leaderboard: Any, method: str) -> None:
    """A packed run starts from the weights and draws run_method gives the same seed: its network is far
    closer to that run's than to another seed's. Grouped convolutions round differently, so after 5 steps
    the same seed's weights differ by up to 0.1 (max over tensors; measured 0.01-0.1) against 0.45-2.8 for
    another seed: a ratio of 0.04-0.12, bound at 0.3."""
    dataset = leaderboard.subset(load_dataset("digits"), 300, 50, 0)
    data = UnlearnData(
        dataset, np.arange(0, 300, 10), recipe=default_recipe("digits").cut_to(1), arch=ArchSpec(width=4)
    )
    torch.manual_seed(0)
    original = build_model(data.arch, dataset.num_classes, dataset.in_channels)
    seeds = [10000, 10001]
    device = torch.device("cpu")
    packed = leaderboard.PACKED[method](original, data, seeds, device)
    alone = [run_method(method, original, data, {}, seed=seed, device=device) for seed in seeds]
    for i, j in ((0, 1), (1, 0)):
        same, other = _max_diff(packed[i], alone[i]), _max_diff(packed[i], alone[j])
        assert same < 0.3 * other, (method, seeds[i], same, other)


def test_report_models_picks_the_lines_of_a_smaller_group(leaderboard: Any, tmp_path: Path) -> None:
    """A run cut short is compared with a full one at equal group sizes: the full run's earlier lines."""
    path = _write(
        tmp_path / "a.jsonl", 0, [_line("x", 9.0, 9.0, n=8, partial=True), _line("x", 1.0, 1.0, n=16)]
    )
    assert [r["epsilon_hat"] for r in leaderboard.read_results(path)[2]] == [1.0]
    assert [r["epsilon_hat"] for r in leaderboard.read_results(path, 8)[2]] == [9.0]
    assert [r["epsilon_hat"] for r in leaderboard.read_results(path, 12)[2]] == [9.0]
    with pytest.raises(ValueError, match="no scored method"):
        leaderboard.read_results(path, 4)
