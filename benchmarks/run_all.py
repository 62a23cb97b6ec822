"""Run every benchmark with its CPU-friendly defaults; each prints its own JSON lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_epsilon.py", "bench_train.py", "bench_methods.py")


def main() -> int:
    failed = 0
    for name in SCRIPTS:
        print(f"# {name}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / name)]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
