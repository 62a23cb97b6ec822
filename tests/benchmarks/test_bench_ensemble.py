"""bench_ensemble runs end to end with tiny sizes and prints one line per pack size, with the promised keys."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from tests.benchmarks import marked_processes, run_benchmark

pytestmark = pytest.mark.slow

KEYS = {
    "bench",
    "device",
    "k",
    "packed_images_per_s",
    "sequential_images_per_s",
    "ratio",
    "test_acc_packed",
    "test_acc_sequential",
}


@pytest.mark.parametrize(
    "args",
    [
        ("--epochs", "1", "--width", "4"),
        ("--epochs", "1", "--width", "4", "--threads", "2"),
        ("--cifar", "--n", "16", "--width", "4"),
    ],
)
def test_bench_ensemble_prints_one_line_per_pack_size(args: tuple[str, ...]) -> None:
    done = run_benchmark("bench_ensemble.py", "--ks", "1,2", *args, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r["k"] for r in lines] == [1, 2]
    for record in lines:
        assert set(record) >= KEYS and record["bench"] == "ensemble" and record["device"] == "cpu"
        assert record["packed_images_per_s"] > 0 and record["sequential_images_per_s"] > 0
        expected = record["packed_images_per_s"] / record["sequential_images_per_s"]
        assert record["ratio"] == pytest.approx(expected, rel=0.01)
        assert 0 <= record["test_acc_packed"] <= 1 and 0 <= record["test_acc_sequential"] <= 1
        # One lane per torch thread, no more than the pack's networks: K = 2 at two threads trains in two.
        threads = 2 if "--threads" in args else 1
        assert record["threads"] == threads and record["lanes"] == min(record["k"], threads)
    assert lines[0]["dataset"] == ("random32" if "--cifar" in args else "digits")


def test_gpu_check_ensemble_section_smoke() -> None:
    done = run_benchmark("gpu_check.py", "--cpu-smoke", "--sections", "ensemble", timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    ensemble = [r for r in lines if r["section"] == "ensemble"]
    chosen = ensemble.pop(0)  # the K a worker picks on this device: a CPU's 8
    assert (chosen["variant"], chosen["k"]) == ("device_pack_size", 8)
    assert {(r["variant"], r["k"]) for r in ensemble} == {
        (v, k) for v in ("eager", "compile") for k in (1, 2)
    }
    for record in ensemble:
        assert "error" not in record, record
        assert record["images_per_s"] == pytest.approx(
            record["k"] * record["per_model_images_per_s"], rel=0.01
        )
        assert record["study_80_refs_hours"] > 0


def test_bench_ensemble_counts_page_faults_and_says_which_allocator() -> None:
    """As the worker sets the allocator, the pack takes a fraction of the fresh pages it takes with glibc's
    (3 epochs: about 14,000, most of them the heap's first growth, against 190,000; 1 epoch was too short
    to tell them apart with room: 14,000 against 51,000 to 72,000)."""
    faults = {}
    for malloc in ("worker", "glibc"):
        done = run_benchmark(
            "bench_ensemble.py", "--ks", "8", "--epochs", "3", "--malloc", malloc, timeout=300
        )
        assert done.returncode == 0, done.stderr[-4000:]
        (record,) = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        assert record["malloc"] == malloc and record["threads"] == 1
        faults[malloc] = record["packed_page_faults"]
    assert faults["worker"] * 4 < faults["glibc"], faults


def test_bench_threads_prints_one_line_per_process() -> None:
    done = run_benchmark(
        "bench_threads.py", "--processes", "2", "--threads", "1", "--steps", "2", timeout=240
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r["process"] for r in lines] == [0, 1]
    for record in lines:
        assert record["bench"] == "threads" and record["processes"] == 2 and record["threads"] == 1
        assert record["packed_step_ms"] > 0 and record["single_step_ms"] > 0


def test_bench_threads_past_its_timeout_stops_its_processes() -> None:
    """Processes that run past --timeout are killed, not left training after the benchmark has gone."""
    name, value = "BENCH_THREADS_MARKER", uuid.uuid4().hex
    env = {**os.environ, name: value}
    started = time.monotonic()
    done = run_benchmark(
        "bench_threads.py", "--processes", "2", "--steps", "1000000", "--timeout", "3", env=env, timeout=240
    )
    assert done.returncode == 1 and "ran past --timeout 3 s" in done.stderr, done.stderr[-4000:]
    assert time.monotonic() - started < 120
    assert marked_processes(f"{name}={value}") == []
