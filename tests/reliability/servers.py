"""Private Redis and Postgres servers that fault tests may stop, restart and wipe.

The shared servers on the default ports belong to every other test: these run on free ports, in
temporary folders, and are removed when the test that started them ends.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e.stack import free_port

PG_USER = "postgres"
"""initdb and postgres refuse to run as root: as root, the cluster runs as this OS user."""


def _wait(predicate: Callable[[], object], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll until predicate() is true, or fail naming what did not come up (with the server's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


class RedisServer:
    """A redis-server subprocess with no persistence, so a restart always comes back empty."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: the broker fault tests need a private one")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        with self.client() as r:
            return bool(r.ping())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start on this server's port (the same one after a restart, so clients reconnect to it)."""
        assert not self.running, "redis is already running"
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self.ping, 15, f"redis-server on port {self.port}", self.log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server; SIGKILL is a crash, SIGTERM a clean shutdown (neither saves anything)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart_empty(self) -> None:
        """Crash and start again on the same port with nothing in it: every queued message is gone."""
        self.stop(signal.SIGKILL)
        self.start()
        # Not dbsize(): clients reconnect at once and write their own keys (queue bindings, rate
        # counters), so the server is asked what it loaded when it started, which is what "empty" means.
        with self.client() as r:
            loaded = r.info("persistence")["rdb_last_load_keys_loaded"]
        assert loaded == 0, f"a restarted private redis loaded {loaded} keys; it must come back empty"


class PostgresCluster:
    """A Postgres cluster of its own (initdb into a temporary folder), controlled with pg_ctl."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
        initdb = found[-1] if found else shutil.which("initdb")
        if initdb is None:
            pytest.skip("Postgres server binaries (initdb, pg_ctl) are not installed")
        self.bin = Path(initdb).resolve().parent
        self.as_user: list[str] = []
        # Not under pytest's tmp_path: that folder is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="lethe-pg-"))
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot start Postgres as another user")
            self.as_user = ["runuser", "-u", PG_USER, "--"]
            shutil.chown(self.root, user=PG_USER)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def init(self) -> None:
        done = self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "root",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/{database}"

    def accepts(self) -> bool:
        with psycopg.connect(f"postgresql://root@127.0.0.1:{self.port}/postgres", connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        done = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )
        assert done.returncode == 0, f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}"
        _wait(self.accepts, 30, f"postgres on port {self.port}", self.log)

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when the database host goes away."""
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        assert done.returncode == 0, f"pg_ctl stop failed:\n{done.stdout}\n{done.stderr}"

    @property
    def running(self) -> bool:
        return self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def create_database(self, name: str) -> str:
        with psycopg.connect(f"postgresql://root@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self.data.exists() and self.running:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _version_key(path: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin/initdb -> (15,): the newest installed major version wins."""
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    """A running private redis-server, stopped at the end whatever the test did to it."""
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresCluster]:
    """A running private Postgres cluster, stopped and deleted at the end."""
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.close()
