"""What a new user waits for: `lethe up` from an empty folder until the API answers and the demo model is
ready, and (with --install) `make install` on a fresh clone with the size of its .venv.

    python benchmarks/bench_first_start.py              # first start, the demo as `make run` trains it
    python benchmarks/bench_first_start.py --install    # also a fresh clone's `make install` (6 GB of disk)

One JSON line per measurement, with the load average before and after: on a shared machine the figures
move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, children, exit_on_sigterm, machine


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def first_start(epochs: int | None, width: int | None, timeout: float) -> dict[str, Any]:
    """Seconds from starting `lethe up` in an empty folder to /health answering and to `demo` being ready."""
    import httpx

    from tests.e2e.stack import free_port

    settings = {"LETHE_DEMO_EPOCHS": epochs, "LETHE_DEMO_WIDTH": width}
    with tempfile.TemporaryDirectory(prefix="lethe-first-start-") as tmp:
        home, port = Path(tmp) / "var", free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
        env.update({"LETHE_HOME": str(home), **{k: str(v) for k, v in settings.items() if v is not None}})
        procs = children(Path(tmp))
        before = machine()
        start = time.monotonic()
        up = procs.start("up", [sys.executable, "-m", "cli.main", "up", "--port", str(port)], env)
        api_s = demo_s = None
        model: dict[str, Any] = {}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                while time.monotonic() - start < timeout and up.poll() is None:
                    try:
                        if api_s is None and http.get("/health").status_code == 200:
                            api_s = time.monotonic() - start
                            http.headers["X-API-Key"] = (home / "api-key").read_text().strip()
                        if api_s is not None:
                            model = http.get("/models/demo").json()
                            if model["status"] != "training":
                                demo_s = time.monotonic() - start
                                break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.5)
        finally:
            procs.stop()
        return {
            "bench": "first_start",
            "api_ready_s": round(api_s, 1) if api_s is not None else None,
            "demo_ready_s": round(demo_s, 1) if demo_s is not None else None,
            "demo_status": model.get("status"),
            "demo_epochs": epochs or 15,
            "demo_width": width or 16,
            "test_accuracy": (model.get("metrics") or {}).get("test_accuracy"),
            **before,
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }


def install() -> dict[str, Any]:
    """`make install` in a fresh clone of this repository (pip from its configured index), then removed."""
    with tempfile.TemporaryDirectory(prefix="lethe-install-") as tmp:
        clone = Path(tmp) / "lethe"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        before = machine()
        start = time.monotonic()
        done = subprocess.run(["make", "install"], cwd=clone, capture_output=True, text=True)
        seconds = time.monotonic() - start
        size = subprocess.run(["du", "-sb", str(clone / ".venv")], capture_output=True, text=True, check=True)
        venv_bytes = int(size.stdout.split()[0])
        line = {
            "bench": "install",
            "seconds": round(seconds, 1),
            "exit_status": done.returncode,
            "venv_gb": round(venv_bytes / 1e9, 2),
            **before,
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }
        shutil.rmtree(clone, ignore_errors=True)
        return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="also time `make install` on a fresh clone")
    parser.add_argument("--demo-epochs", type=int, help="LETHE_DEMO_EPOCHS for the first start (default 15)")
    parser.add_argument("--demo-width", type=int, help="LETHE_DEMO_WIDTH for the first start (default 16)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up on the demo after this long")
    args = parser.parse_args()
    exit_on_sigterm()
    if args.install:
        _emit(install())
    line = first_start(args.demo_epochs, args.demo_width, args.timeout)
    _emit(line)
    return 0 if line["demo_status"] == "ready" else 1


if __name__ == "__main__":
    raise SystemExit(main())
