"""Processes die on purpose: a pool process killed mid-job, a pool that cannot start, a CPU hog beside them.

The API (its sweep requeues jobs whose heartbeat stopped) and the worker are real processes, on both
backends, with fast fault settings: heartbeat 1 s, stale after 6 s, the sweep every second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.db import session_scope
from core.tables import Job
from tests.e2e.stack import Processes, free_port, wait_for
from tests.utils import configure, new_key, reset_caches, train_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {
    "heartbeat_seconds": 1,
    "stale_after_seconds": 6,
    "requeue_after_seconds": 3,
    "maintenance_seconds": 1,
    "device": "cpu",
}
FINISHED = ("succeeded", "failed", "cancelled")
JOB_TIMEOUT = 420.0
"""The job's second run starts after the new pool process imported PyTorch beside a CPU hog: minutes on a
loaded two-core machine, far less anywhere else."""


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of pid, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                out.append(int(entry.name))
    return out


@contextlib.contextmanager
def cpu_hog(n: int = 2) -> Iterator[list[subprocess.Popen[bytes]]]:
    """n busy loops, one per core here, for as long as the block runs."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


class Stack:
    """The API and one worker as real processes on the configured settings."""

    def __init__(self, tmp_path: Path, key: str) -> None:
        self.procs = Processes(tmp_path)
        self.env = dict(os.environ)
        self.port = free_port()
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=60, headers={"X-API-Key": key}
        )
        self.worker: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from cli.main import worker_command

        api = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.procs.start("api", api, self.env)
        self.worker = self.procs.start("worker", worker_command(), self.env)
        wait_for(lambda: self.http.get("/health").status_code == 200, 120, "a healthy API", self.procs.logs)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, predicate, what: str, timeout: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.job(job_id)
            return body if predicate(body) else None

        return wait_for(check, timeout, what, self.procs.logs)

    def close(self) -> None:
        self.http.close()
        self.procs.stop()


@pytest.fixture(params=["embedded", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Settings for one backend: the embedded default, or Postgres + Redis (the test servers)."""
    if request.param == "postgres":
        env = request.getfixturevalue("pg_env")
        return configure(
            monkeypatch,
            home=tmp_path / "home",
            database_url=env["LETHE_DATABASE_URL"],
            broker_url=env["LETHE_BROKER_URL"],
            queue=env["LETHE_QUEUE"],
            **FAST,
        )
    from core.migrate import upgrade
    from core.settings import get_settings

    env = configure(monkeypatch, home=tmp_path / "home", queue=f"lethe-chaos-{uuid.uuid4().hex[:8]}", **FAST)
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    return env


@pytest.fixture
def stack(backend: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, new_key("local"))
    try:
        yield stack
    finally:
        stack.close()
        reset_caches()


def test_sigkill_of_the_pool_process_mid_unlearn_the_job_runs_again_and_succeeds(stack: Stack) -> None:
    """The pool process dies mid-job with a CPU hog beside it: a new one comes up, and runs attempt 2."""
    model_id = train_model("chaos", {"width": 4}, {"epochs": 2})
    stack.start()
    r = stack.http.post(
        "/unlearn",
        json={"model_id": model_id, "forget_ids": [1, 2, 3], "method": "finetune", "params": {"epochs": 60}},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    stack.wait(job_id, lambda b: b["status"] == "running" and b["progress"] > 0.05, "the job under way", 300)
    with session_scope() as session:
        pid = int(session.get(Job, job_id).worker.rsplit(":", 1)[1])
    assert pid in children(stack.worker.pid)
    with cpu_hog():
        os.kill(pid, signal.SIGKILL)
        final = stack.wait(job_id, lambda b: b["status"] in FINISHED, "the job to end", JOB_TIMEOUT)
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
    assert stack.worker.poll() is None  # the same worker, with a new pool process
    fresh = children(stack.worker.pid)
    assert fresh and pid not in fresh
    log = (stack.procs.log_dir / "worker.log").read_text()
    assert "Timed out waiting for UP message" not in log


def test_a_worker_whose_pool_cannot_start_processes_exits_with_code_1(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New pool processes that never report ready in time: the worker exits for its supervisor to restart it.

    On Redis, whose worker runs Celery's event loop: only there does Celery time pool processes out (the
    embedded broker's worker polls, and its pool waits for a slow process as long as it takes)."""
    from cli.main import worker_command

    # Pool processes that take a minute to start, against a start limit of 2 s (which Celery applies to
    # the processes that replace the first ones).
    env = configure(
        monkeypatch,
        home=tmp_path / "home",
        broker_url=redis_url,
        queue=f"lethe-chaos-{uuid.uuid4().hex[:8]}",
        worker_start_seconds=2,
        worker_pool_down_seconds=5,
    )
    procs = Processes(tmp_path)
    try:
        cmd = [*worker_command(), "--include", "tests.reliability.slow_start"]
        worker = procs.start("worker", cmd, {**os.environ, **env})
        log_file = tmp_path / "worker.log"
        wait_for(lambda: " ready." in log_file.read_text(), 120, "the worker to be ready", procs.logs)
        os.kill(children(worker.pid)[0], signal.SIGKILL)
        worker.wait(timeout=120)
        log = log_file.read_text()
        assert worker.returncode == 1, log[-3000:]
        assert "Timed out waiting for UP message" in log and "LETHE_WORKER_POOL_DOWN_SECONDS" in log
        assert not children(worker.pid)
    finally:
        procs.stop()
        reset_caches()
