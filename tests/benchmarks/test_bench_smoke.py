"""The service benchmarks run end to end with tiny counts and print the figures they promise."""

from __future__ import annotations

import json
import os

import pytest

from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, backends: str) -> list[dict]:
    """Run a benchmark script; the Postgres + Redis backend uses the test servers when they are set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["LETHE_BENCH_DATABASE_URL"] = os.environ.get("LETHE_TEST_DATABASE_URL", "")
    env["LETHE_BENCH_BROKER_URL"] = os.environ.get("LETHE_TEST_BROKER_URL", "")
    done = run_benchmark(script, "--backends", backends, *args, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _backends() -> str:
    return "embedded,postgres" if os.environ.get("LETHE_TEST_DATABASE_URL") else "embedded"


def test_bench_api_reports_both_sides_per_level() -> None:
    backends = _backends()
    lines = _run(
        "bench_api.py",
        "--clients",
        "1,32",
        # Enough requests that each side's server CPU spans several of /proc's 10 ms clock ticks: a poll
        # costs about 0.25 ms, so 40 of them could read as no CPU at all.
        "--get-requests",
        "200",
        "--post-requests",
        "200",
        "--time-cap",
        "10",
        "--warmup",
        "4",
        backends=backends,
    )
    assert not [r for r in lines if "skipped" in r], lines
    keys = {(r["backend"], r["endpoint"], r["clients"], r["client"].split(",")[0]) for r in lines}
    assert keys == {
        (b, e, c, g)
        for b in backends.split(",")
        for e in ("GET /jobs/{id}", "POST /unlearn", "POST /forget-requests")
        for c in (1, 32)
        for g in ("httpx.AsyncClient", "asyncio streams")
    }
    for record in lines:
        assert record["bench"] == "api" and record["cpu_count"] >= 1
        for side in ("ours", "bare"):
            figures = record[side]
            # The time cap may stop a side before its 200 requests on a loaded machine (POST /unlearn on
            # Postgres ran 11 a second with one client at load 5 to 9); enough remain to measure its CPU.
            assert figures["errors"] == 0 and 50 <= figures["requests"] <= 200, record
            assert figures["req_per_s"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"], record
        assert record["throughput_ratio"] > 0 and record["server_cpu_ratio"] > 0
        if record["clients"] == 32:
            assert isinstance(record["meets_target"], bool)


def test_bench_queue_times_each_interval() -> None:
    """The embedded default only: each backend starts an API and a worker, which is most of the time."""
    lines = _run("bench_queue.py", "--repeats", "2", backends="embedded")
    assert [r["backend"] for r in lines] == ["embedded"]
    for record in lines:
        assert record["repeats"] == 2
        for key in ("post_to_running_s", "created_to_running_s", "running_to_succeeded_s", "method_s"):
            figures = record[key]
            assert 0 <= figures["min"] <= figures["median"] <= figures["p90"] <= figures["max"], record
        assert record["post_to_succeeded_s"]["median"] > 0


def test_bench_publish_reports_cpu_per_message_for_each_way() -> None:
    if not os.environ.get("LETHE_TEST_BROKER_URL"):
        pytest.skip("LETHE_TEST_BROKER_URL is not set")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["LETHE_BENCH_BROKER_URL"] = os.environ["LETHE_TEST_BROKER_URL"]
    done = run_benchmark("bench_publish.py", "--messages", "64", env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [(line["way"], line["batch"]) for line in lines] == [
        ("send_task one at a time", None),
        ("dispatcher batch", 1),
        ("dispatcher batch", 4),
        ("dispatcher batch", 32),
    ]
    assert all(line["bench"] == "publish" and line["cpu_us_per_message"] > 0 for line in lines)
