"""`lethe up` keeps its worker alive, and nothing it started outlives it, whatever signal ends it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.main import _Supervisor
from tests.e2e.stack import free_port, wait_for
from tests.utils import configure, reset_caches

GONE_WITHIN_S = 30.0


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def _tree(pid: int) -> list[int]:
    """The process and every descendant of it, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents.setdefault(stat[1], []).append(int(entry.name))
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for p in frontier for c in parents.get(p, [])]
        out.extend(frontier)
    return out


def _left(pids: list[int]) -> dict[int, tuple[str, int]]:
    """Those still there: running, or a zombie nobody reaps (one that init adopted is on its way out)."""
    return {p: s for p in pids if (s := _stat(p)) is not None and not (s[0] == "Z" and s[1] == 1)}


def _started(pid: int) -> str | None:
    """The process's start time (in clock ticks since boot): with the pid, it names one process for good."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _kill_all(pids: dict[int, str | None]) -> None:
    """SIGKILL these processes if they are still the ones recorded (a pid may have been reused since)."""
    for pid, started in pids.items():
        if started is not None and _started(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_dead_worker_is_started_again_and_stop_ends_it():
    sup = _Supervisor(["sleep", "60"], stop_seconds=5)
    sup.start()
    try:
        first = sup.proc
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while sup.proc is first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sup.proc is not first and sup.proc.poll() is None
        second = sup.proc
        sup.stop()
        assert second.poll() is not None
        time.sleep(1.5)
        assert sup.proc is second  # stopping is not dying: nothing restarts it
    finally:
        sup.stop()


def test_stop_kills_a_worker_that_ignores_sigterm_and_its_children():
    """A worker hung in its shutdown, beside a child: both are gone once stop returns."""
    script = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); subprocess.Popen(['sleep', '300']); time.sleep(300)"
    sup = _Supervisor([sys.executable, "-c", script], stop_seconds=1)
    sup.start()
    try:
        worker = sup.proc.pid

        def both() -> list[int] | None:
            pids = _tree(worker)
            return pids if len(pids) == 2 else None

        pids = wait_for(both, 30, "the worker's child", str)
        sup.stop()
        deadline = time.monotonic() + 10  # SIGKILLed, a process may take a moment to finish exiting
        while _left(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _left(pids)
    finally:
        sup.stop()


def test_the_worker_dies_with_lethe_up_even_when_it_is_killed(tmp_path):
    script = (
        "import time\n"
        "from cli.main import _Supervisor\n"
        f"s = _Supervisor(['sleep', '120']); s.start(); open({str(tmp_path / 'pid')!r}, 'w').write(str(s.proc.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    pid_file = tmp_path / "pid"
    child, child_started = None, None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        child = int(pid_file.read_text())
        child_started = _started(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _left([child]):
            time.sleep(0.2)
        assert not _left([child]), "the worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()
        if child is not None:
            _kill_all({child: child_started})


class LetheUp:
    """`lethe up` as a real process in its own process group, as a terminal runs it."""

    def __init__(self, home: Path, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home, self.log, self.port = home, log, free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
        env.update(
            {
                "LETHE_HOME": str(home),
                "LETHE_DEVICE": "cpu",
                "LETHE_HEARTBEAT_SECONDS": "1",
                "LETHE_WORKER_STOP_SECONDS": "10",
                # The demo model trains first on a new home; kept tiny, it does not hold up the test's job.
                "LETHE_DEMO_EPOCHS": "1",
                "LETHE_DEMO_WIDTH": "4",
                **(extra_env or {}),
            }
        )
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "up", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.seen: dict[int, str | None] = {}

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def wait_healthy(self) -> None:
        wait_for(lambda: self.http.get("/health").status_code == 200, 300, "lethe up's API", self.logs)
        self.http.headers["X-API-Key"] = (self.home / "api-key").read_text().strip()

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/jobs/{job_id}").json()

    def processes(self) -> list[int]:
        pids = _tree(self.proc.pid)
        self.seen.update({p: _started(p) for p in pids})
        return pids

    def close(self) -> None:
        self.http.close()
        self.processes()
        _kill_all(self.seen)
        self.proc.wait()


@pytest.fixture
def lethe_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LetheUp]]:
    """Start-as-you-go `lethe up` processes on one embedded home; all killed at the end whatever happened."""
    configure(monkeypatch, home=tmp_path / "home")  # this process reads the same database
    started: list[LetheUp] = []
    yield started
    for up in started:
        up.close()
    reset_caches()


def _events(job_id: str) -> list[str]:
    from sqlalchemy import select

    from core.db import session_scope
    from core.tables import AuditEvent

    with session_scope() as session:
        rows = select(AuditEvent.event).where(AuditEvent.object_id == job_id).order_by(AuditEvent.id)
        return list(session.execute(rows).scalars())


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT to its group", "SIGKILL"])
def test_nothing_outlives_lethe_up_and_the_running_job_runs_on_the_next_start(how, lethe_up, tmp_path):
    """Ctrl-C (SIGINT to the group) or a SIGKILL of `lethe up` alone, mid-training: within 30 s no process it
    started is left, the job is back in the queue, and the next `lethe up` runs it to the end."""
    home, log = tmp_path / "home", tmp_path / "up.log"
    up = LetheUp(home, log)
    lethe_up.append(up)
    up.wait_healthy()
    r = up.http.post("/models", json={"dataset": "digits", "arch": {"width": 8}, "recipe": {"epochs": 16}})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    wait_for(
        lambda: (b := up.job(job_id))["status"] == "running" and b["progress"] > 0.02,
        300,
        "the training under way",
        up.logs,
    )
    pids = up.processes()
    assert len(pids) >= 3, pids  # lethe up, the worker, its pool process
    before = len(log.read_text(errors="replace"))
    if how == "SIGKILL":
        os.kill(up.proc.pid, signal.SIGKILL)
    else:
        os.killpg(up.proc.pid, signal.SIGINT)
    signalled = time.monotonic()
    up.proc.wait(timeout=GONE_WITHIN_S)
    while _left(pids) and time.monotonic() - signalled < GONE_WITHIN_S:
        time.sleep(0.5)
    assert not _left(pids), (_left(pids), up.logs())
    events = _events(job_id)
    assert events[-1] == "requeued", (events, up.logs())
    after = log.read_text(errors="replace")[before:]
    if how != "SIGKILL":
        assert "ERROR" not in after, after

    again = LetheUp(home, log)
    lethe_up.append(again)
    again.wait_healthy()
    final = wait_for(
        lambda: (b := again.job(job_id))["status"] in ("succeeded", "failed", "cancelled") and b,
        600,
        "the job on the next start",
        again.logs,
    )
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
    pids = again.processes()
    os.killpg(again.proc.pid, signal.SIGTERM)
    again.proc.wait(timeout=GONE_WITHIN_S)
    assert not _left(pids)
