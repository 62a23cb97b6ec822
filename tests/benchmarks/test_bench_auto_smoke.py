"""bench_auto runs end to end with tiny sizes: one line per method with its excess, packs that train the same
models as one-by-one runs, and a cache that reads the groups back instead of training them again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.methods.params import NoiseResetParams
from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow

TINY = (
    *("--n-models", "2", "--fractions", "0.02", "--methods", "retrain,finetune,noise_reset"),
    *("--epochs", "1", "--width", "4", "--train-size", "400", "--test-size", "200"),
)


def _run(*args: str) -> list[dict]:
    """Every line the benchmark printed; each one, the originals' and the closing one too, is bench "auto"."""
    done = run_benchmark("bench_auto.py", *TINY, *args, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r.get("bench") for r in lines] == ["auto"] * len(lines)
    return lines


def _lines(*args: str) -> dict[str, dict]:
    return {r["method"]: r for r in _run(*args) if "method" in r}


# Two runs from one original differ only by their noise and batch order, and the smooth figure scales by their
# spread: at noise_reset's light defaults on this tiny model that spread is so small that float rounding
# moves the figure by 6% (17.8 against 16.7). Heavier noise spreads the runs, so rounding stays rounding.
SPREAD = ("--params", json.dumps({"noise_reset": {"noise_scale": 0.3, "lr": 0.01}}))


def test_packed_groups_are_the_one_by_one_groups_and_the_cache_reads_them_back(tmp_path: Path) -> None:
    packed = _lines("--pack", "2", "--cache", str(tmp_path), *SPREAD)
    assert set(packed) == {"retrain", "finetune", "noise_reset"}
    assert packed["retrain"]["excess_smooth"] == 0.0
    # Each line says what the method ran with, its defaults included, besides the overrides it was given.
    assert packed["noise_reset"]["params"] == {"noise_scale": 0.3, "lr": 0.01}
    used = NoiseResetParams(noise_scale=0.3, lr=0.01).model_dump(mode="json")
    assert packed["noise_reset"]["params_used"] == used and packed["finetune"]["params"] == {}
    assert packed["finetune"]["params_used"]["epochs"] > 0
    for r in packed.values():
        assert r["packed"] is True and r["cached"] is False and r["n_forget"] == 8
        assert r["excess_replicates"] == 1000 and 0 <= r["excess_unresolved"] <= 1000
        assert 0 <= r["test_accuracy"] <= 1 and r["budget"] > 0 and r["wall_seconds"] > 0
        # Where the group differs from the references: the 8 forget samples in five groups, hardest first.
        groups = r["by_difficulty"]
        assert [g["n_samples"] for g in groups] == [2, 2, 2, 1, 1]
        means = [g["reference_mean"] for g in groups]
        assert means == sorted(means)
    # Retrain scored as the method: each replicate it resolves is exactly 0, the others open the ends.
    low, high = packed["retrain"]["excess_interval"]
    assert low in (0.0, "-inf") and high in (0.0, "inf")
    single = _lines("--pack", "1", *SPREAD)
    for name, r in single.items():
        assert r["packed"] is False
        assert r["smooth"] == pytest.approx(packed[name]["smooth"], rel=2e-2), (
            name
        )  # float rounding, amplified
        assert r["test_accuracy"] == pytest.approx(packed[name]["test_accuracy"], abs=0.01), name
    again = _lines("--pack", "2", "--cache", str(tmp_path), *SPREAD)
    for name, r in again.items():
        assert r["cached"] is True and r["smooth"] == packed[name]["smooth"], name


def test_the_control_original_never_saw_the_forget_set_and_keeps_its_own_groups(tmp_path: Path) -> None:
    real = _lines("--cache", str(tmp_path))
    lines = _run("--cache", str(tmp_path), "--original-without-forget")
    originals = [r for r in lines if r.get("original") is True]
    # The control's original trains anew on the retain set: its forget rows are held out, so they are scored.
    assert len(originals) == 1 and originals[0]["forget_accuracy"] is not None
    control = {r["method"]: r for r in lines if "method" in r}
    assert all(r["original"] == "without_forget" for r in control.values())
    # References and retrain never read the original's weights: read back. The rest ran on the new original.
    assert control["retrain"]["cached"] is True and control["retrain"]["smooth"] == real["retrain"]["smooth"]
    assert control["finetune"]["cached"] is False and control["noise_reset"]["cached"] is False
    assert control["finetune"]["smooth"] != real["finetune"]["smooth"]


def test_with_originals_each_run_starts_from_its_own_original(tmp_path: Path) -> None:
    one = _lines("--cache", str(tmp_path))
    lines = _run("--cache", str(tmp_path), "--originals")
    assert [r["originals"] for r in lines if "originals" in r and "method" not in r] == [2]
    many = {r["method"]: r for r in lines if "method" in r}
    assert all(r["originals"] == 2 for r in many.values())
    assert many["retrain"]["cached"] is True  # retrain never reads the originals
    assert many["finetune"]["cached"] is False and many["finetune"]["smooth"] != one["finetune"]["smooth"]
    # Both: every run starts from its own original, and each of those trained on the retain set alone.
    both = _run("--cache", str(tmp_path), "--originals", "--original-without-forget")
    (pack,) = [r for r in both if "originals" in r and "method" not in r]
    assert pack["originals"] == 2 and pack["forget_accuracy"] is not None  # forget rows held out, so scored
    controls = {r["method"]: r for r in both if "method" in r}
    assert all(r["originals"] == 2 and r["original"] == "without_forget" for r in controls.values())
    assert controls["retrain"]["cached"] is True
    assert (
        controls["finetune"]["cached"] is False
        and controls["finetune"]["smooth"] != many["finetune"]["smooth"]
    )
    # auto searches once, on the first original, and its winner runs from each of them.
    search = json.dumps({"trials": 2, "proxies": 1, "n_models": 2, "time_budget_seconds": 60})
    auto = _run("--cache", str(tmp_path), "--originals", "--auto", "--auto-params", search)
    (searched,) = [r for r in auto if "auto_search" in r]
    assert searched["searched_on_seed"] == 20000 and searched["trials"] <= 2 and searched["cached"] is False
    (winner,) = [r for r in auto if r.get("method") == "auto"]
    assert winner["originals"] == 2 and winner["ran"] == searched["auto_search"]["chosen_method"]
    log = searched["trial_log"]  # every trial, the one chosen among them
    ran = [t for t in log if t["score"] is not None]
    assert len(log) == searched["trials"] and ran and all(t["cost"] <= 0.1 for t in ran)
    feasible = [t for t in ran if t["feasible"]]
    best = min(feasible, key=lambda t: t["score"]) if feasible else min(ran, key=lambda t: t["accuracy_drop"])
    assert (best["method"], best["score"]) == (winner["ran"], searched["auto_search"]["score"])
    # The choice is stored with the groups: a second run reads it back instead of searching again.
    again = _run("--cache", str(tmp_path), "--originals", "--auto", "--auto-params", search)
    (reread,) = [r for r in again if "auto_search" in r]
    assert reread["cached"] is True and reread["auto_search"] == searched["auto_search"]
    assert reread["trial_log"] == log
    assert [r["cached"] for r in again if r.get("method") == "auto"] == [True]


def test_several_forget_seeds_are_measured_each_and_pooled_per_method() -> None:
    lines = _run("--seed", "1,2")
    single = [r for r in lines if "method" in r and not r.get("pooled")]
    assert sorted((r["seed"], r["method"]) for r in single) == sorted(
        (s, m) for s in (1, 2) for m in ("retrain", "finetune", "noise_reset")
    )
    assert len({r["n_forget"] for r in single}) == 1  # the same fraction: the same size, another draw
    pooled = {r["method"]: r for r in lines if r.get("pooled")}
    assert set(pooled) == {"retrain", "finetune", "noise_reset"}
    for name, r in pooled.items():
        assert r["seeds"] == [1, 2] and r["excess_replicates"] == 1000, name
        drops = [s["test_drop"] for s in single if s["method"] == name]
        assert r["test_drop"] == pytest.approx(sum(drops) / 2), name
    # Retrain against itself: every replicate either resolves to exactly 0 or opens an end.
    assert pooled["retrain"]["excess_interval"][0] in (0.0, "-inf")
    assert pooled["retrain"]["excess"] in (0.0, None)
    for bad in ("1,1", "1,x"):  # a repeated seed would count one forget set twice in the pool
        refused = run_benchmark("bench_auto.py", "--seed", bad, timeout=240)
        assert refused.returncode == 2 and "argument --seed" in refused.stderr, bad


def test_a_recipe_change_reaches_the_run_and_a_bad_one_is_a_usage_error() -> None:
    # The data set's recipe with only the named fields changed: the header line says what every group trained
    # with, and the cache keys on it.
    (header, *_) = _run("--recipe", json.dumps({"batch_size": 16, "augment": {"flip": True}}))
    assert header["recipe"]["batch_size"] == 16 and header["recipe"]["epochs"] == 1
    assert header["recipe"]["augment"]["flip"] is True
    assert header["recipe"]["augment"]["crop_padding"] == 0 and header["recipe"]["lr"] == 0.05
    for bad in ('{"batch_size": 0}', '{"epochs": 5, "colour": 1}', "[1]", "{"):
        refused = run_benchmark("bench_auto.py", "--recipe", bad, timeout=240)
        assert refused.returncode == 2 and "argument --recipe" in refused.stderr, bad
