"""Start-up time of the `lethe` command line: wall seconds from launch to exit, each run in a fresh interpreter.

Commands: `lethe --help`, `lethe version`, and `lethe jobs list` against the real API (uvicorn in a
subprocess on a fresh embedded home: SQLite, a ready model row and three queued jobs, no worker). Two floors
run beside them: `python -c pass` (the interpreter and its site packages) and the libraries a command cannot
do without imported together (typer, rich, httpx, pydantic). The commands take turns each round, so a busy
spell on a shared machine hits them all; quote ratios from one run. Beside the wall seconds each record has
the CPU seconds (user + system) the process used, which a loaded machine inflates far less. Target: under
0.5 s on an idle 2-core machine for each lethe command.

The commands run with their bytecode cached, as from an installed package: PYTHONDONTWRITEBYTECODE is left
out of their environment, so the warm-up launch writes it (with it set, every launch compiled cli/ and
client/ again, about a tenth of `lethe jobs list`'s instructions). With --instructions each command also
runs once under valgrind's callgrind, after the timed runs, and its record gets the instructions it
executed: the same on a busy machine as on an idle one.

    python benchmarks/bench_cli.py [--runs 15] [--instructions]

Prints one JSON line per command: {"bench": "cli_startup", "command", "median_s", "p90_s", "runs", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    REPO,
    Backend,
    add_ready_model,
    children,
    exit_on_sigterm,
    fresh_database,
    machine,
    percentile,
    service_env,
)

TARGET_S = 0.5
FLOOR_IMPORTS = "import typer, rich.console, rich.table, httpx, pydantic"


def lethe() -> list[str]:
    """The console script a user runs, from this interpreter's environment (or the module, without one)."""
    script = Path(sys.executable).parent / "lethe"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds from launch to exit, and the CPU seconds (user + system) the process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def instructions(cmd: list[str], env: dict[str, str]) -> int:
    """The instructions the command executed, counted by valgrind's callgrind (which must be installed)."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind on {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return int(found.group(1))


def serve_api(tmp: Path, procs: Any) -> tuple[str, str]:
    """The API on a fresh embedded home with three queued jobs to list; returns its URL and an API key."""
    import httpx

    from tests.e2e.stack import free_port, wait_for

    backend = Backend("embedded")
    home = tmp / "home"
    with fresh_database(backend, home) as db_url:
        model_id, key = add_ready_model(db_url, "bench")
    env = service_env(backend, home, db_url, f"lethe-bench-{uuid.uuid4().hex[:8]}")
    port = free_port()
    procs.start("api", ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "api.main:app"], env)
    url = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": key or ""}
    wait_for(lambda: httpx.get(f"{url}/health").status_code == 200, 120, "the API", procs.logs)
    for ids in ([3], [17], [42]):
        body = {"model_id": model_id, "forget_ids": ids, "method": "none"}
        created = httpx.post(f"{url}/unlearn", json=body, headers=headers, timeout=30)
        if created.status_code != 202:
            raise RuntimeError(f"POST /unlearn answered {created.status_code}: {created.text}")
    return url, key or ""


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Time every command --runs times, in turns; print one JSON line per command."""
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="launches of each command")
    parser.add_argument(
        "--instructions", action="store_true", help="also count each command's instructions with callgrind"
    )
    args = parser.parse_args(argv)
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="lethe-bench-cli-"))
    procs = children(tmp)
    records: list[dict[str, object]] = []
    try:
        url, key = serve_api(tmp, procs)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LETHE_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env |= {"PYTHONPATH": str(REPO), "LETHE_URL": url, "LETHE_API_KEY": key, "COLUMNS": "200"}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            f"python -c '{FLOOR_IMPORTS}'": [sys.executable, "-c", FLOOR_IMPORTS],
            "lethe --help": [*lethe(), "--help"],
            "lethe version": [*lethe(), "version"],
            "lethe jobs list": [*lethe(), "jobs", "list"],
        }
        for cmd in commands.values():
            timed(cmd, env)  # warm the file cache; not counted
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        setup = machine()
        for _ in range(args.runs):
            for name, cmd in commands.items():
                wall, used = timed(cmd, env)
                times[name].append(wall)
                cpu[name].append(used)
        load_end = round(os.getloadavg()[0], 2)  # of the timed runs, before callgrind's
        counted = (
            {name: instructions(cmd, env) for name, cmd in commands.items()} if args.instructions else {}
        )
        for name, values in times.items():
            median = statistics.median(values)
            record: dict[str, object] = {
                "bench": "cli_startup",
                "command": name,
                "median_s": round(median, 3),
                "p90_s": round(percentile(values, 90), 3),
                "min_s": round(min(values), 3),
                "cpu_median_s": round(statistics.median(cpu[name]), 3),
                "cpu_min_s": round(min(cpu[name]), 3),
                "runs": len(values),
                **setup,
                "loadavg_1m_end": load_end,
            }
            if name in counted:
                record["instructions"] = counted[name]
            if name.startswith("lethe"):
                record |= {"target_s": TARGET_S, "meets_target": median < TARGET_S}
            print(json.dumps(record), flush=True)
            records.append(record)
    except BaseException:
        print(procs.logs(), file=sys.stderr)
        raise
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return records


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
