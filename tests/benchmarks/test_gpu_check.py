"""The GPU check runs on the CPU with tiny sizes, so a broken script is caught before it reaches a GPU."""

from __future__ import annotations

import json
import subprocess

import pytest

from ml.methods import METHOD_SPECS
from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow

VARIANTS = {"fp32", "bf16", "bf16_channels_last", "bf16_channels_last_compile"}


def _positive(record: dict, *keys: str) -> None:
    for key in keys:
        value = record[key]
        assert isinstance(value, int | float) and value > 0, (key, record)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_benchmark("gpu_check.py", "--cpu-smoke", *args)


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    """Run the smoke once; every line it prints must be JSON."""
    done = _run()
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_setup_and_summary(lines: list[dict]) -> None:
    setup, summary = lines[0], lines[-1]
    assert setup["section"] == "setup" and setup["device"] == "cpu" and setup["smoke"] is True
    assert setup["threads"] == 1 and set(setup["sizes"]) >= {"width", "batches", "jobs"}
    assert summary["section"] == "summary"
    _positive(summary, "total_s", "peak_memory_mib_process")
    assert not [r for r in lines if "error" in r or "skipped" in r]


def test_trainer_variants_per_batch(lines: list[dict]) -> None:
    trainer = [r for r in lines if r["section"] == "trainer"]
    batches = lines[0]["sizes"]["batches"]
    assert {(r["batch"], r["variant"]) for r in trainer} == {(b, v) for b in batches for v in VARIANTS}
    compiled = [r for r in trainer if r["variant"] == "bf16_channels_last_compile"]
    assert compiled and all(r["compile_backend"] == "eager" and r["compile_mode"] is None for r in compiled)
    for record in trainer:
        _positive(
            record, "images_per_s", "step_ms", "wall_images_per_s", "warmup_s", "vs_fp32", "peak_memory_mib"
        )


def test_concurrent_jobs(lines: list[dict]) -> None:
    jobs = {r["jobs"]: r for r in lines if r["section"] == "concurrency"}
    assert sorted(jobs) == lines[0]["sizes"]["jobs"]
    for k, record in jobs.items():
        _positive(record, "total_images_per_s", "scaling_vs_1_job", "peak_memory_mib")
        assert len(record["per_job_images_per_s"]) == k and min(record["per_job_images_per_s"]) > 0


def test_every_method_timed_against_retrain(lines: list[dict]) -> None:
    methods = {r["method"]: r for r in lines if r["section"] == "methods"}
    assert set(methods) == set(METHOD_SPECS)
    assert methods["retrain"]["ratio_to_retrain"] == 1.0
    for record in methods.values():
        _positive(record, "seconds", "ratio_to_retrain", "ratio_at_study_recipe", "peak_memory_mib")
        assert record["predicted_ratio_to_retrain"] >= 0
    assert methods["retrain"]["predicted_ratio_to_retrain"] == 1.0


def test_a_chosen_subset_runs_alone_with_retrain_for_its_ratio() -> None:
    done = _run("--sections", "trainer,methods", "--variants", "fp32", "--methods", "salun")
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert lines[0]["variants"] == ["fp32"] and lines[0]["methods"] == ["salun"]
    assert [(r["section"], r.get("variant") or r.get("method")) for r in lines[1:-1]] == [
        ("trainer", "fp32"),
        ("methods", "retrain"),
        ("methods", "salun"),
    ]


def test_an_unknown_method_is_refused_with_the_valid_names() -> None:
    done = _run("--methods", "salun,nope")
    assert done.returncode != 0 and not done.stdout
    assert "unknown methods ['nope']" in done.stderr and "salun" in done.stderr
