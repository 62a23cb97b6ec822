"""Run every benchmark with its CPU-friendly defaults; each prints its own JSON lines.

The service benchmarks run on the embedded default and, when reachable, on Postgres + Redis
(LETHE_BENCH_DATABASE_URL / LETHE_BENCH_BROKER_URL, else the local test servers).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "bench_epsilon.py",
    "bench_train.py",
    "bench_methods.py",
    "bench_ensemble.py",
    "bench_api.py",
    "bench_queue.py",
    "bench_cli.py",
)


def main() -> int:
    """Run each script in turn (one at a time: they share the machine's cores); non-zero if any failed."""
    failed = 0
    for name in SCRIPTS:
        print(f"# {name}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / name)]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
