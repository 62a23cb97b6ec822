"""Smoke tests of the benchmark scripts: each runs with tiny sizes in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def run_benchmark(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run benchmarks/<script> on one CPU thread with no GPU visible; env defaults to this process's."""
    full = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=full,
    )
