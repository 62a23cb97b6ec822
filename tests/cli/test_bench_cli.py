"""benchmarks/bench_cli.py runs end to end with one launch per command and prints what docs/benchmarks.md quotes."""

from __future__ import annotations

import json

from tests.benchmarks import run_benchmark


def test_bench_cli_times_each_command_against_the_floors() -> None:
    proc = run_benchmark("bench_cli.py", "--runs", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["command"] for r in records] == [
        "python -c pass",
        "python -c 'import typer, rich.console, rich.table, httpx, pydantic'",
        "lethe --help",
        "lethe version",
        "lethe jobs list",
    ]
    for record in records:
        assert record["bench"] == "cli_startup" and record["runs"] == 1
        assert 0 < record["min_s"] <= record["median_s"] <= record["p90_s"] < 120
        assert 0 < record["cpu_min_s"] <= record["cpu_median_s"]
        assert ("meets_target" in record) == record["command"].startswith("lethe")
