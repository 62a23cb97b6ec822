"""bench_auto runs end to end with tiny sizes: one line per method with its excess, packs that train the same
models as one-by-one runs, and a cache that reads the groups back instead of training them again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow

TINY = (
    *("--n-models", "2", "--fractions", "0.02", "--methods", "retrain,finetune,noise_reset"),
    *("--epochs", "1", "--width", "4", "--train-size", "400", "--test-size", "200"),
)


def _lines(*args: str) -> dict[str, dict]:
    done = run_benchmark("bench_auto.py", *TINY, *args, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {r["method"]: r for r in lines if r.get("bench") == "auto" and "method" in r}


def test_packed_groups_are_the_one_by_one_groups_and_the_cache_reads_them_back(tmp_path: Path) -> None:
    packed = _lines("--pack", "2", "--cache", str(tmp_path))
    assert set(packed) == {"retrain", "finetune", "noise_reset"}
    assert packed["retrain"]["excess_smooth"] == 0.0
    for r in packed.values():
        assert r["packed"] is True and r["cached"] is False and r["n_forget"] == 8
        assert 0 <= r["test_accuracy"] <= 1 and r["budget"] > 0 and r["wall_seconds"] > 0
    single = _lines("--pack", "1")
    for name, r in single.items():
        assert r["packed"] is False
        assert r["smooth"] == pytest.approx(packed[name]["smooth"], rel=2e-2), (
            name
        )  # float rounding, amplified
        assert r["test_accuracy"] == pytest.approx(packed[name]["test_accuracy"], abs=0.01), name
    again = _lines("--pack", "2", "--cache", str(tmp_path))
    for name, r in again.items():
        assert r["cached"] is True and r["smooth"] == packed[name]["smooth"], name
