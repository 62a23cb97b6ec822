"""bench_artifacts.py runs on both stores and shows the object store holding a checkpoint once."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow


def test_bench_artifacts_reports_both_stores_and_no_second_copy() -> None:
    done = run_benchmark("bench_artifacts.py", "--mb", "32", "--repeat", "1")
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [r["store"] for r in lines] == ["s3 (moto)", "local"]
    for record in lines:
        assert record["bench"] == "artifacts" and record["object_mb"] == 32
        assert record["write_mb_per_s"] > 0 and record["read_mb_per_s"] > 0
        # A second copy of the object would raise the peak by about 32 MB.
        assert record["write_peak_rss_growth_mb"] < 16 and record["read_peak_rss_growth_mb"] < 16, record
