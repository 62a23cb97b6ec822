"""A benchmark that is stopped, even by SIGKILL, leaves none of the servers it started running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.benchmarks import marked_processes
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _servers(marker: str) -> list[int]:
    return [pid for pid in marked_processes(marker) if b"uvicorn" in _cmdline(pid)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_bench_api_stopped_mid_run_leaves_no_server(sig: signal.Signals) -> None:
    marker = f"BENCH_CLEANUP_MARKER={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update({"OMP_NUM_THREADS": "1", marker.split("=")[0]: marker.split("=")[1]})
    script = str(REPO / "benchmarks" / "bench_api.py")
    bench = subprocess.Popen(
        [sys.executable, script, "--backends", "embedded", "--clients", "1", "--get-requests", "100000"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(_servers(marker)) < 2 and time.monotonic() < deadline and bench.poll() is None:
            time.sleep(0.5)
        assert len(_servers(marker)) == 2, "the benchmark did not start its two servers"
        bench.send_signal(sig)
        bench.wait(timeout=120)
        deadline = time.monotonic() + 30
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not marked_processes(marker)
    finally:
        bench.kill()
        bench.wait()
        for pid in marked_processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
