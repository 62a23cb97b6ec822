"""bench_packed_methods runs end to end with tiny sizes: per repeat, both sides' times and the packed
networks' distance from their separate runs."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["neggrad_plus", "scrub"])
def test_bench_packed_methods_prints_both_sides_per_repeat(method: str) -> None:
    done = run_benchmark(
        "bench_packed_methods.py",
        *("--method", method, "--k", "2", "--width", "4", "--epochs", "1", "--repeats", "2"),
        *("--params", '{"epochs": 1}'),
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r.get("bench") for r in lines] == ["packed_methods"] * len(lines)
    original, *records = lines
    assert original["original"] is True and original["test_accuracy"] > 0
    assert [r["order"] for r in records] == ["packed first", "separate first"]
    for r in records:
        assert (r["method"], r["k"], r["threads"], r["params"]) == (method, 2, 1, {"epochs": 1})
        assert r["packed_wall_s"] > 0 and r["separate_wall_s"] > 0 and r["packed_cpu_s"] > 0
        assert r["wall_ratio"] > 0 and r["cpu_ratio"] > 0
        assert r["max_weight_diff"] < 1e-3  # the pack's networks are the separate runs
