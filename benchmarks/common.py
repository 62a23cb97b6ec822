"""Helpers shared by the service benchmarks: the servers to run against, fresh databases, CPU accounting.

`serve` starts the service a benchmark measures (API servers and optionally a worker, on a fresh database
of one backend) and stops it again, whatever ends the benchmark.

Imports stay light (no torch, no core at module level): bench_api serves its bare FastAPI app from a
uvicorn subprocess that imports that module, and the comparison must not pay for heavy imports.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LOCAL_DATABASE_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
LOCAL_BROKER_URL = "redis://127.0.0.1:6379/15"
UVICORN = ["uvicorn", "--host", "127.0.0.1"]
"""docker-compose.yml's api command, less the port and the app (so the same uvicorn settings)."""
API_APP = ("api.main:app",)
READY_TIMEOUT_S = 120.0
"""Seconds a server has to answer GET /health; a loaded two-core machine takes a while to import the app."""


@dataclass(frozen=True)
class Backend:
    """Where the service keeps its state: the embedded default (SQLite files) or Postgres + Redis."""

    name: str
    database_url: str = ""
    broker_url: str = ""


def reachable(url: str, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection at the URL's host and port."""
    parts = urlsplit(url.replace("+psycopg", "").replace("sqla+", ""))
    default = {"postgresql": 5432, "redis": 6379}.get(parts.scheme, 0)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default), timeout):
            return True
    except OSError:
        return False


def backends(names: Sequence[str]) -> tuple[list[Backend], list[dict[str, Any]]]:
    """The requested backends that can run here, and a skip record for each that cannot.

    Postgres + Redis come from LETHE_BENCH_DATABASE_URL / LETHE_BENCH_BROKER_URL, else the local test
    servers when they answer.
    """
    out: list[Backend] = []
    skipped: list[dict[str, Any]] = []
    for name in names:
        if name == "embedded":
            out.append(Backend("embedded"))
        elif name == "postgres":
            db = os.environ.get("LETHE_BENCH_DATABASE_URL", "") or LOCAL_DATABASE_URL
            broker = os.environ.get("LETHE_BENCH_BROKER_URL", "") or LOCAL_BROKER_URL
            if reachable(db) and reachable(broker):
                out.append(Backend("postgres", db, broker))
            else:
                skipped.append({"backend": name, "skipped": f"no server answers at {db} and {broker}"})
        else:
            raise SystemExit(f"unknown backend {name!r}; valid: embedded, postgres")
    return out, skipped


@contextmanager
def fresh_database(backend: Backend, home: Path) -> Iterator[str]:
    """A new, migrated database for one run (a SQLite file under home, or a Postgres database dropped after)."""
    from core.migrate import upgrade

    if backend.name == "embedded":
        home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{home / 'lethe.sqlite'}"
        upgrade(url)
        yield url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(backend.database_url)
    name = f"lethe_bench_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_queue(backend: Backend, queue: str) -> None:
    """Delete a benchmark's Redis queues and kombu's binding keys (the embedded broker dies with home)."""
    if backend.name != "postgres":
        return
    import redis

    from core.queue import ROLES, queue_name

    names = [queue_name(role, queue) for role in ROLES]  # core.queue.worker_queues() with LETHE_QUEUE=queue
    redis.Redis.from_url(backend.broker_url).delete(*names, *(f"_kombu.binding.{n}" for n in names))


def exit_on_sigterm() -> None:
    """A benchmark stopped by SIGTERM (a test's timeout, a CI runner) still runs its `finally` blocks:
    its servers are stopped and its databases dropped."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def die_with_benchmark() -> None:
    """In a child, before exec: the kernel SIGKILLs it when the benchmark dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def children(log_dir: Path) -> Any:
    """tests.e2e.stack.Processes whose processes die with the benchmark, whatever ends it."""
    import subprocess

    from tests.e2e.stack import Processes, resolve

    class Children(Processes):
        def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
            log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
            proc = subprocess.Popen(
                resolve(cmd),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_benchmark,
            )
            self.procs.append((name, proc))
            return proc

    return Children(log_dir)


def service_env(backend: Backend, home: Path, database_url: str, queue: str, **extra: str) -> dict[str, str]:
    """This process's environment without LETHE_* variables, pointed at one backend and home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update({"LETHE_HOME": str(home), "LETHE_QUEUE": queue, "OMP_NUM_THREADS": "1"})
    if backend.name == "postgres":
        env.update({"LETHE_DATABASE_URL": database_url, "LETHE_BROKER_URL": backend.broker_url})
    env.update(extra)
    return env


def worker_cmd(queue: str) -> list[str]:
    """`lethe up`'s worker command line, consuming this run's queue."""
    from cli.main import worker_command
    from core.queue import ROLES, queue_name

    cmd = worker_command(concurrency=1)
    cmd[cmd.index("--queues") + 1] = ",".join(queue_name(r, queue) for r in ROLES)  # worker_queues() for it
    return cmd


@dataclass
class Service:
    """A running service: its API servers by name, the database they share, and a key to call them with."""

    backend: Backend
    folder: Path
    """This run's temporary folder (home, logs), removed when the service stops."""
    database_url: str
    key: str | None
    model_id: str | None
    urls: dict[str, str]
    servers: dict[str, subprocess.Popen[bytes]]
    procs: Any

    @property
    def url(self) -> str:
        """The first server's URL (the only one, unless several apps were asked for)."""
        return next(iter(self.urls.values()))

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key} if self.key else {}

    def logs(self) -> str:
        """The tail of every process's output, for an error message."""
        return str(self.procs.logs())


@contextmanager
def serve(
    backend: Backend,
    label: str,
    *,
    model: str | None = None,
    worker: bool = False,
    env: Mapping[str, str] | None = None,
    apps: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[Service]:
    """The service on a fresh, migrated database of one backend, until the block ends; then stopped and removed.

    Registers digits and an API key, and a ready model of that name with `model`. Each of `apps` (name:
    uvicorn's arguments after the port; by default one server, "api", serving the real app) is served by
    `uvicorn --host 127.0.0.1 --port P` on a free port; `worker` adds `lethe up`'s worker (concurrency 1).
    All run with service_env plus `env`, on this run's own queue and home under a temporary folder named
    after `label`, and die with the benchmark. The block starts
    once every server answers /health. When it raises, every process's log goes to stderr.
    """
    import httpx

    from tests.e2e.stack import free_port, wait_for

    tmp = Path(tempfile.mkdtemp(prefix=f"lethe-{label}-"))
    queue = f"lethe-{label}-{uuid.uuid4().hex[:8]}"
    procs = children(tmp)
    try:
        with fresh_database(backend, tmp / "home") as db_url:
            if model is None:
                model_id, key = None, register_digits(db_url)
            else:
                model_id, key = add_ready_model(db_url, model)
            full_env = service_env(backend, tmp / "home", db_url, queue, **(env or {}))
            servers: dict[str, subprocess.Popen[bytes]] = {}
            urls: dict[str, str] = {}
            for name, app in (apps or {"api": API_APP}).items():
                at = free_port()
                servers[name] = procs.start(name, [*UVICORN, "--port", str(at), *app], full_env)
                urls[name] = f"http://127.0.0.1:{at}"
            if worker:
                procs.start("worker", worker_cmd(queue), full_env)
            for name, url in urls.items():
                wait_for(
                    lambda url=url: httpx.get(f"{url}/health").status_code == 200,
                    READY_TIMEOUT_S,
                    name,
                    procs.logs,
                )
            try:
                yield Service(backend, tmp, db_url, key, model_id, urls, servers, procs)
            finally:
                procs.stop()  # before its database is dropped under it
    except BaseException:
        print(procs.logs(), file=sys.stderr)
        raise
    finally:
        procs.stop()
        drop_queue(backend, queue)
        shutil.rmtree(tmp, ignore_errors=True)


def api_key(session: Any, tenant: str = "local") -> str | None:
    """A new API key for the tenant, or None when this version of the service has no keys."""
    try:
        from core.auth import create_key
    except ImportError:
        return None
    return create_key(session, tenant)


def add_ready_model(database_url: str, name: str) -> tuple[str, str | None]:
    """Register digits, a ready model row (no checkpoint: only the API reads it) and an API key."""
    from sqlalchemy.orm import Session

    from core.bootstrap import ensure_digits
    from core.db import make_engine
    from core.tables import Model, ModelStatus

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            key = api_key(session)
            ds = ensure_digits(session)
            model = Model(name=name, dataset_id=ds.id, arch={"width": 8}, recipe={}, status=ModelStatus.ready)
            session.add(model)
            session.commit()
            return model.id, key
    finally:
        engine.dispose()


def register_digits(database_url: str) -> str | None:
    """Register digits (as `lethe migrate --bootstrap` does, without the demo model); returns an API key."""
    from sqlalchemy.orm import Session

    from core.bootstrap import ensure_digits
    from core.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            key = api_key(session)
            ensure_digits(session)
            session.commit()
            return key
    finally:
        engine.dispose()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process (not its children) has used, from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default does."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def as_utc(value: str | datetime) -> datetime:
    """A timestamp from the API or the database as an aware UTC datetime (SQLite drops the zone)."""
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def machine() -> dict[str, Any]:
    """What a figure depends on besides its own settings: cores, load when it started, Python."""
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
