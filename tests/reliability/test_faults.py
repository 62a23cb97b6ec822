"""Break things on purpose: kill workers mid-job, wipe the broker, stop the database; no job lost or stuck.

Every server broken here is a private one started by the test (its own redis-server, its own
Postgres cluster), never the shared servers other tests use. The API and workers are real
processes with fast fault settings: heartbeat 1 s, stale after 20 s, republish after 3 s, and the
API's background sweep every second. Twenty missed heartbeats before a job counts as lost: on two busy
cores a few seconds without one happen, and a live job taken for a lost one would make every attempt
count below a matter of luck.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from core.db import session_scope
from core.tables import AuditEvent, Job
from tests.e2e.stack import Processes, free_port, wait_for
from tests.reliability.servers import PostgresCluster, RedisServer, private_postgres, private_redis
from tests.utils import configure, new_key, reset_caches

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {
    "heartbeat_seconds": 1,
    "stale_after_seconds": 20,
    "requeue_after_seconds": 3,
    "maintenance_seconds": 1,
}
FINISHED = ("succeeded", "failed", "cancelled")
LONG_TRAINING = {"dataset": "digits", "arch": {"width": 8}, "recipe": {"epochs": 6}}
"""About 12 s on one idle CPU thread: long enough to be killed in the middle."""
MEDIUM_TRAINING = {"dataset": "digits", "arch": {"width": 8}, "recipe": {"epochs": 4}}
SHORT_TRAINING = {"dataset": "digits", "arch": {"width": 4}, "recipe": {"epochs": 1}}
JOB_TIMEOUT = 180.0


@dataclass
class Tally:
    """What the whole module did, for the summary line."""

    submitted: int = 0
    faults: int = 0
    lost: int = 0
    stuck: int = 0

    def line(self) -> str:
        return (
            f"reliability: jobs submitted {self.submitted}, faults injected {self.faults}, "
            f"jobs lost {self.lost}, jobs stuck {self.stuck}"
        )


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """Print the summary line once the module's tests have run, whatever the output capture."""
    yield TALLY
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(TALLY.line())
    else:
        print(TALLY.line())
    assert TALLY.lost == 0 and TALLY.stuck == 0, TALLY.line()


class Stack:
    """The API and workers as real processes, on the settings this test configured."""

    def __init__(self, tmp_path: Path, broker: RedisServer, key: str) -> None:
        self.procs = Processes(tmp_path)
        self.broker = broker
        self.env = dict(os.environ)
        self.queue = self.env["LETHE_QUEUE"]
        self.port = free_port()
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=30, headers={"X-API-Key": key}
        )
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_api(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.api = self.procs.start("api", cmd, self.env)

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_for(
            lambda: self.http.get("/health").status_code == 200, timeout, "a healthy API", self.procs.logs
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        from cli.main import worker_command

        proc = self.procs.start(f"worker{len(self.workers) + 1}", worker_command(), self.env)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """A clean shutdown (SIGTERM): the worker finishes nothing new and exits."""
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children at once, as when its machine dies."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        TALLY.faults += 1

    def kill_pool_child(self, proc: subprocess.Popen[bytes], job_id: str) -> int:
        """SIGKILL the pool process running the job (found from the job's worker column); returns its pid."""
        with session_scope() as session:
            worker = session.get(Job, job_id).worker  # "host:pid"
        assert worker, f"job {job_id} has no worker"
        pid = int(worker.rsplit(":", 1)[1])
        assert _parent_pid(pid) == proc.pid, f"pid {pid} is not a pool child of worker {proc.pid}"
        os.kill(pid, signal.SIGKILL)
        TALLY.faults += 1
        return pid

    def pool_children(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """The worker's live pool processes."""
        return [
            int(d.name)
            for d in Path("/proc").iterdir()
            if d.name.isdigit() and _parent_pid(int(d.name), missing=-1) == proc.pid
        ]

    def submit(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST something that queues a job; 202 expected, the job counted as submitted."""
        r = self.http.post(path, json=body)
        assert r.status_code == 202, (path, r.status_code, r.text)
        TALLY.submitted += 1
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, (job_id, r.status_code, r.text)
        return r.json()

    def wait_progress(self, job_id: str, above: float, timeout: float = 120) -> dict[str, Any]:
        """The job's body once it is running past the given fraction (it must not finish first)."""

        def running() -> dict[str, Any] | None:
            body = self.job(job_id)
            assert body["status"] not in FINISHED, f"job ended before the fault: {body}"
            return body if body["status"] == "running" and body["progress"] > above else None

        return wait_for(running, timeout, f"job {job_id} past {above:.0%}", self.procs.logs)

    def broker_holds(self, job_id: str) -> bool:
        """Whether any message for the job is in the broker: waiting in the queue or held unacked."""
        with self.broker.client() as r:
            for key in r.scan_iter(match=f"{self.queue}*"):
                if r.type(key) == b"list" and any(job_id.encode() in m for m in r.lrange(key, 0, -1)):
                    return True
            return any(job_id.encode() in m for m in r.hvals("unacked"))

    def settle(self, job_ids: list[str], timeout: float = JOB_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Wait for every job to finish; count and refuse any that is lost or stuck at the deadline."""
        deadline = time.monotonic() + timeout
        final: dict[str, dict[str, Any]] = {}
        while True:
            for job_id in job_ids:
                if job_id not in final:
                    with contextlib.suppress(httpx.HTTPError, AssertionError):
                        body = self.job(job_id)
                        if body["status"] in FINISHED:
                            final[job_id] = body
            if len(final) == len(job_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lost: list[str] = []
        stuck: list[str] = []
        for job_id in job_ids:
            if job_id in final:
                continue
            r = self.http.get(f"/jobs/{job_id}")
            if r.status_code == 404 or (r.json()["status"] == "queued" and not self.broker_holds(job_id)):
                lost.append(f"{job_id}: {r.text}")
            else:
                stuck.append(f"{job_id}: {r.text}")
        TALLY.lost += len(lost)
        TALLY.stuck += len(stuck)
        assert not lost and not stuck, f"lost {lost}\nstuck {stuck}\n{self.procs.logs()}"
        return final

    def close(self) -> None:
        self.http.close()
        self.procs.stop()


def _parent_pid(pid: int, missing: int | None = None) -> int:
    """The parent of a process, from /proc; `missing` for one that is gone (if given)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        if missing is None:
            raise
        return missing
    return int(stat.rsplit(")", 1)[1].split()[1])


def _events(job_id: str) -> list[str]:
    with session_scope() as session:
        return list(
            session.execute(
                select(AuditEvent.event).where(AuditEvent.object_id == job_id).order_by(AuditEvent.id)
            ).scalars()
        )


@contextlib.contextmanager
def running_stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    broker: RedisServer,
    *,
    workers: int = 1,
    **settings: Any,
) -> Iterator[Stack]:
    """Configure settings, seed digits and a key for "local", start the API and workers; stop all after."""
    from core.bootstrap import ensure_digits

    configure(
        monkeypatch,
        home=tmp_path / "home",
        database_url=database_url,
        broker_url=broker.url(),
        queue=f"lethe-faults-{uuid.uuid4().hex[:8]}",
        device="cpu",
        **{**FAST, **settings},
    )
    with session_scope() as session:
        ensure_digits(session)
    stack = Stack(tmp_path, broker, new_key("local"))
    try:
        stack.start_api()
        for _ in range(workers):  # they import torch while the API starts
            stack.start_worker()
        stack.wait_healthy()
        yield stack
    finally:
        stack.close()
        reset_caches()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    with private_redis(tmp_path) as server:
        yield server


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with private_postgres() as pg:
        yield pg


def test_sigkill_worker_mid_training_the_job_is_retried_and_succeeds(pg_env, broker, tmp_path, monkeypatch):
    """The worker dies (SIGKILL) mid-epoch; the API's sweep requeues the job and a new worker finishes it."""
    with running_stack(tmp_path, monkeypatch, pg_env["LETHE_DATABASE_URL"], broker) as stack:
        created = stack.submit("/models", LONG_TRAINING)
        job_id = created["job_id"]
        stack.wait_progress(job_id, 0.1)
        stack.kill_worker(stack.workers[0])
        assert stack.job(job_id)["status"] == "running"  # nobody has noticed yet
        stack.start_worker()
        final = stack.settle([job_id])[job_id]
        assert final["status"] == "succeeded" and final["attempts"] == 2, final
        assert final["progress"] == 1.0 and final["error"] is None
        events = _events(job_id)
        assert events.count("requeued") == 1 and events.count("running") == 2, events
        assert events[-1] == "succeeded", events
        model = stack.http.get(f"/models/{created['model_id']}").json()
        assert model["status"] == "ready", model


def test_sigkill_pool_child_after_max_attempts_the_job_fails_with_the_reason(
    pg_env, broker, tmp_path, monkeypatch
):
    """With one attempt allowed, a killed pool process fails the job naming the lost heartbeat."""
    with running_stack(tmp_path, monkeypatch, pg_env["LETHE_DATABASE_URL"], broker, max_attempts=1) as stack:
        worker = stack.workers[0]
        created = stack.submit("/models", LONG_TRAINING)
        job_id = created["job_id"]
        stack.wait_progress(job_id, 0.1)
        killed = stack.kill_pool_child(worker, job_id)
        final = stack.settle([job_id])[job_id]
        assert final["status"] == "failed" and final["attempts"] == 1, final
        assert _events(job_id).count("running") == 1
        assert "heartbeat" in final["error"] and "1 attempts" in final["error"], final
        model = stack.http.get(f"/models/{created['model_id']}").json()
        assert model["status"] == "failed", model
        # The worker itself lives on with a new pool process in place of the killed one.
        assert worker.poll() is None
        children = stack.pool_children(worker)
        assert children and killed not in children, children


def test_redis_restarted_empty_with_jobs_queued_they_all_complete(pg_env, broker, tmp_path, monkeypatch):
    """The broker loses every queued message; the sweep republishes them and a worker runs them all."""
    with running_stack(tmp_path, monkeypatch, pg_env["LETHE_DATABASE_URL"], broker) as stack:
        trained = stack.submit("/models", SHORT_TRAINING)
        assert stack.settle([trained["job_id"]])[trained["job_id"]]["status"] == "succeeded"
        stack.stop_worker(stack.workers[0])

        queued = [
            stack.submit(
                "/unlearn", {"model_id": trained["model_id"], "forget_ids": [i, i + 100], "method": "none"}
            )["job_id"]
            for i in range(4)
        ]
        assert all(stack.broker_holds(j) for j in queued)
        broker.restart_empty()
        TALLY.faults += 1
        assert not any(stack.broker_holds(j) for j in queued)
        assert {stack.job(j)["status"] for j in queued} == {"queued"}

        stack.start_worker()
        final = stack.settle(queued)
        assert {body["status"] for body in final.values()} == {"succeeded"}, final
        assert all(body["attempts"] == 1 for body in final.values()), final
        republished = re.findall(r"maintenance: .* republished (\d+)", (tmp_path / "api.log").read_text())
        assert sum(map(int, republished)) >= len(queued), (
            republished
        )  # the sweep, not luck, brought them back

        # Once more with the worker running and idle: it and the API reconnect by themselves.
        broker.restart_empty()
        TALLY.faults += 1
        again = stack.submit(
            "/unlearn", {"model_id": trained["model_id"], "forget_ids": [7], "method": "none"}
        )
        assert stack.settle([again["job_id"]])[again["job_id"]]["status"] == "succeeded"


def test_redis_down_health_names_the_broker_and_the_api_recovers(pg_env, broker, tmp_path, monkeypatch):
    """Health answers 503 naming the broker while it is down; once it is back the same API takes work again."""
    with running_stack(tmp_path, monkeypatch, pg_env["LETHE_DATABASE_URL"], broker, workers=0) as stack:
        broker.stop(signal.SIGKILL)
        TALLY.faults += 1
        health = stack.http.get("/health")
        assert health.status_code == 503, health.text
        assert health.json() == {"status": "down", "database": "ok", "broker": "down"}
        broker.start()
        stack.wait_healthy(30)
        assert stack.http.get("/models").status_code == 200
        job_id = stack.submit("/models", SHORT_TRAINING)["job_id"]
        wait_for(lambda: stack.broker_holds(job_id), 30, "the job's message", stack.procs.logs)
        assert stack.http.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        stack.settle([job_id])


def test_redis_down_no_endpoint_answers_500(pg_env, broker, tmp_path, monkeypatch):
    """While the broker is down every endpoint answers 503 or a clear 4xx, never a 500."""
    with running_stack(tmp_path, monkeypatch, pg_env["LETHE_DATABASE_URL"], broker, workers=0) as stack:
        broker.stop(signal.SIGKILL)
        TALLY.faults += 1
        probe = _probe(stack)
        print(f"\nwhile redis was down: {_statuses(probe)}")
        broker.start()
        stack.wait_healthy(30)
        for job_id in probe.jobs:  # accepted while the broker was down: cancel, so none is left behind
            stack.http.post(f"/jobs/{job_id}/cancel")
        stack.settle(probe.jobs)
        _assert_no_server_errors(probe, stack)


def test_postgres_stopped_the_api_answers_503_and_recovers(cluster, broker, tmp_path, monkeypatch):
    """Postgres stops mid-training: health is 503 naming the database, no 500 anywhere, and all recovers."""
    from core.migrate import upgrade

    url = cluster.create_database("lethe")
    upgrade(url)
    with running_stack(tmp_path, monkeypatch, url, broker) as stack:
        running = stack.submit("/models", MEDIUM_TRAINING)["job_id"]
        stack.wait_progress(running, 0.1)

        cluster.stop()
        TALLY.faults += 1
        health = stack.http.get("/health")
        assert health.status_code == 503, health.text
        assert health.json()["database"].startswith("down"), health.json()
        probe = _probe(stack, running)
        print(f"\nwhile postgres was down: {_statuses(probe)}")
        time.sleep(2)  # a brief outage, not an instant blip
        cluster.start()

        # The same API process recovers by itself.
        stack.wait_healthy(30)
        assert stack.http.get("/models").status_code == 200
        after = stack.submit("/models", SHORT_TRAINING)["job_id"]
        final = stack.settle([running, after, *probe.jobs])
        assert final[after]["status"] == "succeeded", final[after]
        # The job cut off by the outage is retried (or fails with a reason): it never stays running.
        assert final[running]["status"] == "succeeded" or final[running]["error"], final[running]
        print(
            f"the job running during the outage: {final[running]['status']}, attempts {final[running]['attempts']}"
        )
        _assert_no_server_errors(probe, stack)


@dataclass
class Probe:
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    """'METHOD path' -> (status, start of the body)"""
    jobs: list[str] = field(default_factory=list)


PROBES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/models", None),
    ("GET", "/models/{job}", None),
    ("POST", "/models", SHORT_TRAINING),
    ("GET", "/jobs/{job}", None),
    ("GET", "/jobs/{job}/metrics", None),
    ("POST", "/jobs/{job}/cancel", None),
    ("POST", "/unlearn", {"model_id": "x", "forget_ids": [1], "method": "none"}),
    ("GET", "/forget-requests/{job}", None),
    ("GET", "/evaluations", None),
    ("GET", "/evaluations/{job}", None),
    ("GET", "/references/{job}", None),
    ("GET", "/studies/{job}", None),
    ("GET", "/methods", None),
    ("GET", "/datasets", None),
]


def _probe(stack: Stack, job_id: str = "00000000-0000-0000-0000-000000000000") -> Probe:
    """Call every endpoint during an outage, keeping each answer and any job that was still accepted."""
    probe = Probe()
    for method, template, body in PROBES:
        try:
            r = _request_once_more(stack, method, template.format(job=job_id), body)
        except httpx.TransportError as exc:  # no answer at all, even on a new connection
            probe.answers[f"{method} {template}"] = (0, f"no answer: {exc!r}")
            continue
        probe.answers[f"{method} {template}"] = (r.status_code, r.text[:300])
        if r.status_code == 202 and "job_id" in r.json():
            probe.jobs.append(r.json()["job_id"])
            TALLY.submitted += 1
    return probe


def _request_once_more(stack: Stack, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
    """uvicorn closes a kept-alive connection after an unhandled error: retry once on a fresh one."""
    try:
        return stack.http.request(method, path, json=body)
    except httpx.TransportError:
        return stack.http.request(method, path, json=body)


def _assert_no_server_errors(probe: Probe, stack: Stack) -> None:
    """503 (or any clear 4xx) during an outage is fine; a 500 is a bug of the service."""
    errors = {k: v for k, v in probe.answers.items() if v[0] == 0 or (v[0] >= 500 and v[0] != 503)}
    assert not errors, f"server errors during the outage: {errors}\n{stack.procs.logs()}"


def _statuses(probe: Probe) -> str:
    return ", ".join(f"{k} {v[0]}" for k, v in probe.answers.items())
