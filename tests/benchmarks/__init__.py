"""Smoke tests of the benchmark scripts: each runs with tiny sizes in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

TIMEOUT_S = 900.0
"""Minutes on an idle machine; a loaded two-core one (seven test runs at once) takes several times that."""


def run_benchmark(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run benchmarks/<script> on one CPU thread with no GPU visible; env defaults to this process's.

    On timeout the script gets SIGTERM (its `finally` stops its servers), then SIGKILL; the servers it
    started die with it in any case (benchmarks/common.py), so a timed-out test leaves no process behind.
    """
    full = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(REPO / "benchmarks" / script), *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=full,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{script} ran past {timeout:g} s\n{stderr[-4000:]}") from None
    finally:
        _stop(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the script's process group, SIGKILL a minute later if it is still there."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries the marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
    return found
