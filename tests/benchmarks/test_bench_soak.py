"""The soak benchmark, small: every request fulfilled exactly once, none lost, batches as the policy says."""

from __future__ import annotations

import json
import os

import pytest

from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["embedded", "postgres"])
def test_a_small_soak_fulfils_every_request_once_in_the_batches_its_policy_makes(backend: str) -> None:
    if backend == "postgres" and not os.environ.get("LETHE_TEST_DATABASE_URL"):
        pytest.skip("Postgres + Redis test servers not configured")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["LETHE_BENCH_DATABASE_URL"] = os.environ.get("LETHE_TEST_DATABASE_URL", "")
    env["LETHE_BENCH_BROKER_URL"] = os.environ.get("LETHE_TEST_BROKER_URL", "")
    requests, seconds, window = 90, 8.0, 2.0
    done = run_benchmark(
        "bench_soak.py",
        "--backends",
        backend,
        "--requests",
        str(requests),
        "--seconds",
        str(seconds),
        "--clients",
        "8",
        "--window",
        str(window),
        "--sweep-seconds",
        "0.5",
        "--fulfil-timeout",
        "600",
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    (record,) = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert record["backend"] == backend
    assert record["checks"] == {
        "none_lost": True,
        "exactly_once": True,
        "batches_as_the_policy_says": True,
        "lineage_keeps_every_id": True,
    }
    answers = record["answers"]
    assert answers.get("202", 0) + answers.get("200", 0) == requests  # a 200: a retry found its first send
    assert record["stored"] == record["fulfilled_once"] == requests
    batches = record["batches"]
    assert sum(batches["sizes"]) == requests and batches["early"] == batches["late"] == []
    # Arrivals span 8 s and a batch waits 2 s for its oldest request, so no single batch can hold them all;
    # one per window at most, plus the one the last arrivals start.
    assert 2 <= batches["count"] <= int(seconds // window) + 2
