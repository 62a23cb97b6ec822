"""A real S3-compatible HTTP server for tests (moto's server mode in a subprocess) and a TCP proxy in front
of it that can cut uploads off midway."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """Start `python -m moto.server` on a free loopback port; yields its endpoint URL; killed at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine imports moto slowly
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            with suppress(httpx.HTTPError):
                httpx.get(f"{url}/moto-api/", timeout=2)
                break
            if time.monotonic() > deadline:
                raise RuntimeError("moto server did not answer within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait()


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client on the server, for looking behind the store's back."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class CuttingProxy:
    """Forwards TCP to an upstream server; while `cut_after` is set, closes any connection once that many
    bytes have gone upstream on it: large uploads die midway, small requests (an abort) still pass."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after: int | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        sent = 0
        try:
            while chunk := src.recv(65536):
                sent += len(chunk)
                if upward and self.cut_after is not None and sent > self.cut_after:
                    with self._lock:
                        self.cuts += 1
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
