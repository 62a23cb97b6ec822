"""Requests/s and p50/p99 latency of GET /jobs/{id}, POST /unlearn and POST /forget-requests against a bare
FastAPI endpoint.

The real app and a bare app (same paths, static answers, sync handlers like the real ones) are each
served by `uvicorn <app> --host 127.0.0.1 --port P` in a subprocess (docker-compose.yml's command, so
the same uvicorn settings), on a fresh migrated database: the embedded default (SQLite in a temporary
LETHE_HOME) and, when reachable, Postgres + Redis (LETHE_BENCH_DATABASE_URL / LETHE_BENCH_BROKER_URL,
else the local test servers; a fresh database is created and dropped). No worker runs: POST /unlearn
stores the request and job rows and publishes the job id, and the job stays queued; POST /forget-requests
stores the request and its audit event and starts nothing (no policy is set, so no batch either).

Load comes from this process with one keep-alive connection per client, each client sending its next
request when the last one answered, from two load generators in turn: an httpx.AsyncClient, and
hand-written HTTP/1.1 on asyncio streams ("raw"), which costs the shared cores far less per request (with
httpx the client can be the bottleneck, which flatters the ratio). The per-tenant rate limit is raised
out of the way. Every level (1, 8, 32 clients) sends a fixed number of requests or stops at a time cap;
ours and bare take turns at each level, so a busy spell on a shared machine hits both. Prints one JSON
line per (backend, clients, load generator, endpoint) with both sides (req/s, p50/p99/max ms, status counts, server and
client CPU ms per request from /proc), throughput_ratio (ours / bare req/s), server_cpu_ratio (bare /
ours server CPU per request: the capacity ratio when the client is not the bottleneck) and, at 32 clients,
the target check (TARGETS: p99 below a bound and at least a share of the bare throughput).

    python benchmarks/bench_api.py [--backends embedded,postgres] [--clients 1,8,32] [--client httpx,raw]
                                   [--get-requests 1000] [--post-requests 300] [--time-cap 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    API_APP,
    REPO,
    Backend,
    backends,
    exit_on_sigterm,
    machine,
    percentile,
    process_cpu_seconds,
    serve,
)

TARGETS: dict[str, tuple[float, float]] = {
    "GET /jobs/{id}": (50.0, 0.5),
    "POST /forget-requests": (50.0, 0.3),
    "POST /unlearn": (150.0, 0.15),
}
"""Per endpoint at TARGET_CLIENTS: (p99 ms below, share of the bare endpoint's requests/s at least)."""
TARGET_CLIENTS = 32
RATE_LIMIT = "1000000000/minute"
"""The per-tenant limit is raised out of the way: this measures serving, not refusing (its check still runs)."""
MAX_ACTIVE_JOBS = "1000000"
"""So is the limit on a tenant's queued jobs: with the worker paused every POST /unlearn stays queued."""
LIMITS_OUT_OF_THE_WAY = {"LETHE_RATE_LIMIT": RATE_LIMIT, "LETHE_TENANT_MAX_ACTIVE_JOBS": MAX_ACTIVE_JOBS}
APPS = {"ours": API_APP, "bare": ("--app-dir", str(HERE), "bench_api:bare_app")}
"""Only the app differs between ours and bare: common.serve runs both with the same uvicorn command."""

CLIENTS = {
    "httpx": "httpx.AsyncClient, one process, keep-alive",
    "raw": "asyncio streams, hand-written HTTP/1.1, one process, keep-alive",
}

bare_app = FastAPI(title="bare")
_BARE_JOB: dict[str, Any] = {
    "kind": "unlearn",
    "status": "queued",
    "progress": 0.0,
    "progress_info": {},
    "error": None,
    "attempts": 0,
    "model_id": "00000000-0000-0000-0000-000000000000",
    "forget_request_id": "00000000-0000-0000-0000-000000000000",
    "result": None,
    "created_at": "2025-01-01T00:00:00.000000Z",
    "started_at": None,
    "finished_at": None,
    "updated_at": "2025-01-01T00:00:00.000000Z",
}


@bare_app.get("/jobs/{job_id}")
def bare_job(job_id: str) -> dict[str, Any]:
    """A job-shaped answer without a database: what FastAPI and uvicorn alone cost."""
    return {"id": job_id, **_BARE_JOB}


@bare_app.post("/unlearn", status_code=202)
def bare_unlearn(body: dict[str, Any]) -> dict[str, str]:
    """Parses the same JSON body and answers like POST /unlearn, storing nothing."""
    return {"job_id": str(uuid.uuid4()), "forget_request_id": str(uuid.uuid4())}


@bare_app.post("/forget-requests", status_code=202)
def bare_forget_request(body: dict[str, Any]) -> dict[str, str]:
    """Parses the same JSON body and answers like POST /forget-requests, storing nothing."""
    return {"forget_request_id": str(uuid.uuid4()), "status": "pending"}


@bare_app.get("/health")
def bare_health() -> dict[str, str]:
    return {"status": "ok"}


@dataclass
class Load:
    """One load run's figures."""

    requests: int
    errors: int
    statuses: dict[str, int]
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float | None
    client_cpu_s: float

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "requests": self.requests,
            "errors": self.errors,
            "statuses": self.statuses,
            "seconds": round(self.seconds, 3),
            "req_per_s": round(self.requests / self.seconds, 1) if self.seconds > 0 else 0.0,
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else None,
            "server_cpu_ms_per_req": (
                round(1000 * self.server_cpu_s / self.requests, 3)
                if self.server_cpu_s is not None and self.requests
                else None
            ),
            "client_cpu_ms_per_req": round(1000 * self.client_cpu_s / self.requests, 3)
            if self.requests
            else None,
        }


Sender = Callable[[], Awaitable[str]]


class RawConnection:
    """One keep-alive HTTP/1.1 connection that sends one prepared request over and over.

    Just enough HTTP for these endpoints (uvicorn answers with Content-Length): a load generator that
    costs far less CPU per request than httpx, which matters when client and server share two cores.
    """

    def __init__(self, base_url: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        lines = [f"{method} {path} HTTP/1.1", f"host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body:
            lines += ["content-type: application/json", f"content-length: {len(body)}"]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> str:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        status = (await self.reader.readline()).split(b" ", 2)
        if len(status) < 2:
            raise ConnectionError("connection closed")
        length = 0
        close = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            await self.close()
        return status[1].decode()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def drive(
    senders: list[Sender], expected: int, requests: int, time_cap: float, server_pid: int, warmup: int
) -> Load:
    """One loop per sender, each sending its next request when the last one answered."""
    for _ in range(max(1, warmup // len(senders))):  # open every connection and warm the code paths
        await asyncio.gather(*(send() for send in senders))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    issued = 0
    deadline = time.perf_counter() + time_cap

    async def loop(send: Sender) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            start = time.perf_counter()
            try:
                status = await send()
            except Exception as exc:  # a refused or dropped connection is an error to count, not a crash
                status = type(exc).__name__
            latencies.append(1000 * (time.perf_counter() - start))
            statuses[status] += 1

    cpu_before = process_cpu_seconds(server_pid)
    client_before = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(loop(send) for send in senders))
    seconds = time.perf_counter() - start
    client_cpu = time.process_time() - client_before
    cpu_after = process_cpu_seconds(server_pid)
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    errors = sum(n for status, n in statuses.items() if status != str(expected))
    return Load(len(latencies), errors, dict(statuses), seconds, latencies, server_cpu, client_cpu)


async def run_load(
    base_url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    expected: int,
    clients: int,
    requests: int,
    time_cap: float,
    server_pid: int,
    warmup: int,
    headers: dict[str, str],
    client: str = "httpx",
) -> Load:
    """`clients` concurrent request loops over keep-alive connections until `requests` or `time_cap`."""
    if client == "raw":
        payload = json.dumps(body).encode() if body is not None else b""
        conns = [RawConnection(base_url, method, path, payload, headers) for _ in range(clients)]
        try:
            return await drive([c.send for c in conns], expected, requests, time_cap, server_pid, warmup)
        finally:
            for conn in conns:
                await conn.close()
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0, headers=headers) as http:

        async def send() -> str:
            return str((await http.request(method, path, json=body)).status_code)

        return await drive([send] * clients, expected, requests, time_cap, server_pid, warmup)


def ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 3) if top and bottom else None


def compare(
    setup: dict[str, Any], backend: Backend, label: str, clients: int, client: str, sides: dict[str, Any]
) -> dict[str, Any]:
    """One figure's record: both sides, their ratios and, for GET at 32 clients, the target check."""
    ours, bare = sides["ours"], sides["bare"]
    record = {
        **setup,
        "backend": backend.name,
        "endpoint": label,
        "clients": clients,
        "client": CLIENTS[client],
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "ours": ours,
        "bare": bare,
        "throughput_ratio": ratio(ours["req_per_s"], bare["req_per_s"]),
        "server_cpu_ratio": ratio(bare["server_cpu_ms_per_req"], ours["server_cpu_ms_per_req"]),
    }
    if label in TARGETS and clients == TARGET_CLIENTS:
        p99_below, ratio_at_least = TARGETS[label]
        record["target"] = {"p99_ms_below": p99_below, "ratio_at_least": ratio_at_least}
        record["meets_target"] = bool(
            ours["errors"] == 0
            and ours["p99_ms"] < p99_below
            and (record["throughput_ratio"] or 0) >= ratio_at_least
        )
    return record


def bench_backend(backend: Backend, args: argparse.Namespace, setup: dict[str, Any]) -> list[dict[str, Any]]:
    """Serve ours and bare for one backend and load both at every level; returns the result records."""
    import httpx

    records: list[dict[str, Any]] = []
    with serve(backend, "bench-api", model="bench", env=LIMITS_OUT_OF_THE_WAY, apps=APPS) as service:
        urls, headers = service.urls, service.headers
        unlearn = {"model_id": service.model_id, "forget_ids": [3, 17, 42], "method": "none"}
        created = httpx.post(f"{urls['ours']}/unlearn", json=unlearn, headers=headers, timeout=30)
        if created.status_code != 202:
            raise RuntimeError(f"POST /unlearn answered {created.status_code}: {created.text}")
        job_path = f"/jobs/{created.json()['job_id']}"
        intake = {"model_id": service.model_id, "forget_ids": [3, 17, 42], "requested_by": "bench"}
        endpoints = [
            ("GET /jobs/{id}", "GET", job_path, None, 200, args.get_requests),
            ("POST /unlearn", "POST", "/unlearn", unlearn, 202, args.post_requests),
            ("POST /forget-requests", "POST", "/forget-requests", intake, 202, args.post_requests),
        ]
        for clients in args.clients:
            for client in args.client:
                for label, method, path, body, expected, count in endpoints:
                    sides = {
                        side: asyncio.run(
                            run_load(
                                urls[side],
                                method,
                                path,
                                body,
                                expected,
                                clients,
                                count,
                                args.time_cap,
                                service.servers[side].pid,
                                args.warmup,
                                headers,
                                client,
                            )
                        ).summary()
                        for side in ("ours", "bare")
                    }
                    record = compare(setup, backend, label, clients, client, sides)
                    print(json.dumps(record), flush=True)
                    records.append(record)
    return records


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    exit_on_sigterm()
    """Parse arguments, bench every backend that can run here, print one JSON line per figure."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="embedded,postgres", help="comma-separated: embedded, postgres")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--get-requests", type=int, default=1000, help="GET requests per level and side")
    parser.add_argument("--post-requests", type=int, default=300, help="POST requests per level and side")
    parser.add_argument("--time-cap", type=float, default=15.0, help="seconds at most per level and side")
    parser.add_argument("--warmup", type=int, default=32, help="untimed requests before each run")
    parser.add_argument(
        "--client", default="httpx,raw", help="comma-separated load generators: " + ", ".join(CLIENTS)
    )
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    args.client = args.client.split(",")
    if set(args.client) - set(CLIENTS):
        parser.error(f"--client: choose from {', '.join(CLIENTS)}")
    import fastapi
    import uvicorn

    setup = {
        "bench": "api",
        "device": "cpu",
        **machine(),
        "server": "uvicorn --host 127.0.0.1 (one process, default loop and http: "
        + ("uvloop" if _has("uvloop") else "asyncio")
        + ", "
        + ("httptools" if _has("httptools") else "h11")
        + ", access log on)",
        "uvicorn": uvicorn.__version__,
        "fastapi": fastapi.__version__,
        "rate_limit": RATE_LIMIT,
        "get_requests": args.get_requests,
        "post_requests": args.post_requests,
        "time_cap_s": args.time_cap,
    }
    chosen, skipped = backends(args.backends.split(","))
    for record in skipped:
        print(json.dumps({"bench": "api", **record}), flush=True)
    records: list[dict[str, Any]] = []
    for backend in chosen:
        records += bench_backend(backend, args, setup)
    return records


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
