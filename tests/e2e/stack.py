"""Start real service processes (API, worker) for end-to-end tests, and stop them afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve(cmd: list[str]) -> list[str]:
    """Run console scripts (lethe, uvicorn, celery) from this interpreter's environment."""
    exe = BIN / cmd[0]
    return [str(exe), *cmd[1:]] if exe.exists() else cmd


class Processes:
    """Background processes in their own process groups, with their output in log files."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(
            resolve(cmd), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{(self.log_dir / f'{name}.log').read_text(errors='replace')[-4000:]}"
            for name, _ in self.procs
        )

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str], interval: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")


def wait_job(http: httpx.Client, job_id: str, timeout: float, logs: Callable[[], str]) -> dict[str, Any]:
    """Poll GET /jobs/{id} until it finishes; returns the final job body."""

    def done() -> dict[str, Any] | None:
        body = http.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout, f"job {job_id}", logs)


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with the next scripted status."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        self.on_post: Callable[[], None] | None = None  # runs before each answer
        self.got = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if outer.on_post is not None:
                    outer.on_post()
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                self.send_header("Content-Length", "0")
                self.end_headers()
                outer.got.set()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
