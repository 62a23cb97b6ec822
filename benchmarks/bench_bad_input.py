"""What bad and large input costs the API and everyone else: the 422 of a huge body, polls meanwhile, a fan-out.

The real app is served by `uvicorn api.main:app` in a subprocess on a fresh migrated database (the embedded
default, and Postgres + Redis when reachable; see common.backends). No worker runs. Measured from this process:

- oversized: POST /unlearn with 1,000,001 forget_ids (about 8 MB, over the schema's cap): seconds to the 422
  and the reply's size, while a second client polls GET /jobs/{id} in a loop; the polls' p50 / max latency
  during the posts against the same client's polls when nothing else runs (the event loop must not stall);
- fan_out: POST /evaluations with n_models 203 (407 jobs inserted): seconds to the 202.

Prints one JSON line per (backend, case) with a "bench" key.

    python benchmarks/bench_bad_input.py [--backends embedded,postgres] [--posts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    REPO,
    Backend,
    add_ready_model,
    backends,
    drop_queue,
    fresh_database,
    machine,
    percentile,
    service_env,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _poll(client: httpx.AsyncClient, job_id: str, stop: asyncio.Event) -> list[float]:
    """Poll GET /jobs/{id} back to back until stop is set; each poll's latency in ms."""
    out = []
    while not stop.is_set():
        start = time.perf_counter()
        r = await client.get(f"/jobs/{job_id}")
        out.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, r.text
    return out


def _summary(polls: list[float]) -> dict[str, Any]:
    return {
        "polls": len(polls),
        "poll_p50_ms": round(percentile(polls, 50), 1),
        "poll_max_ms": round(max(polls), 1),
    }


async def _measure(url: str, key: str, posts: int) -> list[dict[str, Any]]:
    headers = {"X-API-Key": key}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as poller,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as poster,
    ):
        job = (
            await poster.post("/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "none"})
        ).json()
        stop = asyncio.Event()
        quiet = asyncio.create_task(_poll(poller, job["job_id"], stop))
        await asyncio.sleep(3)
        stop.set()
        baseline = await quiet

        big = json.dumps({"model_id": "m1", "method": "none", "forget_ids": list(range(1_000_001))}).encode()
        stop = asyncio.Event()
        busy = asyncio.create_task(_poll(poller, job["job_id"], stop))
        seconds, sizes, codes = [], [], []
        for _ in range(posts):
            start = time.perf_counter()
            r = await poster.post("/unlearn", content=big, headers={"content-type": "application/json"})
            seconds.append(time.perf_counter() - start)
            sizes.append(len(r.content))
            codes.append(r.status_code)
        stop.set()
        during = await busy

        start = time.perf_counter()
        fan = await poster.post(
            "/evaluations", json={"model_id": "m1", "forget_ids": [2], "method": "none", "n_models": 203}
        )
        fan_seconds = time.perf_counter() - start
    return [
        {
            "case": "oversized",
            "body_bytes": len(big),
            "status": sorted(set(codes)),
            "reply_bytes_max": max(sizes),
            "seconds_p50": round(percentile(seconds, 50), 3),
            "seconds_max": round(max(seconds), 3),
            "quiet": _summary(baseline),
            "during": _summary(during),
        },
        {"case": "fan_out", "n_models": 203, "status": fan.status_code, "seconds": round(fan_seconds, 3)},
    ]


def run(backend: Backend, posts: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with fresh_database(backend, home) as db_url:
            _model_id, key = add_ready_model(db_url, "m1")
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            env = service_env(
                backend, home, db_url, queue, LETHE_RATE_LIMIT="1000000/minute", LETHE_MAINTENANCE_SECONDS="0"
            )
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "uvicorn"),
                    "api.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"{url}/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the API did not come up")
                    time.sleep(0.3)
                return asyncio.run(_measure(url, key or "", posts))
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
                drop_queue(backend, queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="embedded,postgres")
    parser.add_argument("--posts", type=int, default=3)
    args = parser.parse_args()
    chosen, skipped = backends(args.backends.split(","))
    for record in skipped:
        print(json.dumps({"bench": "bad_input", **record}))
    for backend in chosen:
        for record in run(backend, args.posts):
            print(json.dumps({"bench": "bad_input", "backend": backend.name, **record, "machine": machine()}))


if __name__ == "__main__":
    main()
