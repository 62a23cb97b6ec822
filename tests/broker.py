"""A real Celery worker process for the tests: jobs reach it as broker messages, as they do in production.

One worker process serves every test that shares its settings (the database, the broker, the artifact
folder, ...); a test that changes a LETHE_* setting that workers read gets a worker of its own. Each test
publishes to its own queue, and the worker consumes a test's queues only inside `consuming()`: jobs a test
leaves queued on purpose stay queued, and a message left in a finished test's queue is never consumed.
The command line is the product's own (`cli.main.worker_command`), so the worker consumes every queue the
app routes to. On the embedded default's SQLite broker, which carries no remote control, the worker is started
for one `consuming()` block with the test's queues and stopped at its end.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from tempfile import gettempdir

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180.0
"""Seconds a worker may take to answer its first ping (imports PyTorch in its pool on a loaded machine)."""
CONTROL_TIMEOUT = 10.0
"""Seconds a worker may take to confirm that it starts or stops consuming a queue."""


def queues_of(command: list[str]) -> list[str]:
    """The queues a worker command line consumes (its --queues/-Q option, comma-separated)."""
    for flag in ("--queues", "-Q"):
        if flag in command:
            return command[command.index(flag) + 1].split(",")
    raise ValueError(f"the worker command names no queues: {command}")


NOT_THE_WORKERS = frozenset(
    {
        "LETHE_QUEUE",
        "LETHE_RATE_LIMIT",
        "LETHE_AUTH_CACHE_SECONDS",
        "LETHE_MAX_BODY_BYTES",
        "LETHE_MAX_UPLOAD_BYTES",
    }
)
"""Settings a worker never reads (the queue it is told; the rest are the API's): changing them needs no new one."""


SHARED_WORKER_ENV = {"LETHE_WEBHOOK_SENDER": "false"}
"""The shared worker lives across tests on one database: a delivery loop in it would take the deliveries of
whatever test runs, which send their own (core.webhooks.deliver_due) and saw them taken first, under load."""


def worker_settings() -> tuple[tuple[str, str], ...]:
    """The settings a worker process starts with now: every LETHE_* variable that a worker reads."""
    env = os.environ.items()
    return tuple(sorted((k, v) for k, v in env if k.startswith("LETHE_") and k not in NOT_THE_WORKERS))


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class BrokerWorker:
    """One `celery worker` process started from the product's command line, consuming queues on request."""

    def __init__(self, settings: tuple[tuple[str, str], ...]) -> None:
        from cli.main import worker_command
        from core.settings import get_settings

        self.settings = settings
        # Remote control needs a fanout exchange: Redis has one, kombu's SQLAlchemy transport does not.
        self.remote = not get_settings().broker.startswith("sqla+")
        self.hostname = f"lethe-test-{uuid.uuid4().hex[:8]}@localhost"
        self.command = [*worker_command(), "--hostname", self.hostname]
        self.log = Path(gettempdir()) / f"{self.hostname.split('@')[0]}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=os.environ | SHARED_WORKER_ENV, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_end_with_parent,
            )  # fmt: skip
        self.consumed = set(queues_of(self.command))
        self._wait_ready()

    def _control(self) -> object:
        from core.queue import get_celery

        return get_celery().control

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            if self._ready():
                return
        tail = self.tail()
        self.stop()
        raise RuntimeError(f"the test worker did not answer within {START_TIMEOUT:.0f} s:\n{tail}")

    def _ready(self) -> bool:
        """It answers a ping, or without remote control, its log says it is ready."""
        if self.remote:
            return bool(self._control().ping(destination=[self.hostname], timeout=1.0))
        time.sleep(0.2)
        return f"{self.hostname} ready." in self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the test worker exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def consume(self, queues: list[str]) -> None:
        """Start consuming these queues; returns once the worker has confirmed it."""
        if not self.remote and not set(queues) <= self.consumed:
            raise RuntimeError(f"a worker without remote control consumes {self.consumed}, not {queues}")
        for queue in queues:
            if queue not in self.consumed:
                self._confirm("add_consumer", queue)
                self.consumed.add(queue)

    def release(self, queues: list[str]) -> None:
        """Stop consuming these queues (a job already running finishes); a no-op without remote control."""
        for queue in queues if self.remote else ():
            if queue in self.consumed:
                self._confirm("cancel_consumer", queue)
                self.consumed.discard(queue)

    def _confirm(self, command: str, queue: str) -> None:
        self.check_alive()
        replies = getattr(self._control(), command)(
            queue, destination=[self.hostname], reply=True, timeout=CONTROL_TIMEOUT
        )
        if not replies:
            raise RuntimeError(f"the test worker did not confirm {command} {queue!r}:\n{self.tail()}")

    def stop(self) -> None:
        """Warm shutdown (the running job finishes its step), then kill whatever is left of the group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # pool processes the parent left behind
        self.process.wait()
        self.log.unlink(missing_ok=True)


_worker: BrokerWorker | None = None


def shared_worker() -> BrokerWorker:
    """The worker for the current settings, started (or restarted) when they changed."""
    global _worker
    settings = worker_settings()
    if _worker is not None and (_worker.settings != settings or _worker.process.poll() is not None):
        stop_shared_worker()
    if _worker is None:
        _worker = BrokerWorker(settings)
    return _worker


def stop_shared_worker() -> None:
    """Stop the worker, if one runs: before its database is dropped, and at exit whatever happens."""
    global _worker
    if _worker is not None:
        _worker.stop()
        _worker = None


atexit.register(stop_shared_worker)


def current_queues() -> list[str]:
    """The queues the app routes this test's jobs to, as the product's worker command line names them."""
    from cli.main import worker_command

    return queues_of(worker_command())


@contextmanager
def consuming() -> Iterator[BrokerWorker]:
    """The worker consumes this test's queues for the duration of the block."""
    worker = shared_worker()
    queues = current_queues()
    worker.consume(queues)
    try:
        yield worker
    finally:
        if worker.remote:
            worker.release(queues)
        else:
            stop_shared_worker()  # it cannot be told to stop consuming: it stops


def unfinished_jobs() -> list[tuple[str, str, str]]:
    """(id, kind, status) of every job still queued or running."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.tables import Job, JobStatus

    with session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.kind, Job.status).where(Job.status.in_((JobStatus.queued, JobStatus.running)))
        ).all()
    return [tuple(row) for row in rows]


def finished_job_ids() -> set[str]:
    from sqlalchemy import select

    from core.db import session_scope
    from core.tables import FINISHED, Job

    with session_scope() as session:
        return set(session.execute(select(Job.id).where(Job.status.in_(FINISHED))).scalars())


def wait_until_idle(worker: BrokerWorker, timeout: float, running_only: bool = False) -> None:
    """Wait until no job is queued or running (only running: `running_only`), or fail naming them."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [job for job in unfinished_jobs() if not running_only or job[2] == "running"]
        if not busy:
            return
        worker.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not finished after {timeout:.0f} s: {busy}\n{worker.tail()}")
        time.sleep(0.1)
