"""Where the API process's CPU goes while it serves one endpoint under load: py-spy samples every thread.

Serves the real app as bench_api does (uvicorn in a subprocess, a fresh migrated database, the rate and
queue limits out of the way), loads one POST endpoint from `--clients` keep-alive connections for
`--seconds`, and has py-spy (`pip install py-spy`; not a dependency of the service) record the server's
stacks meanwhile (`--gil`; stacks whose leaf is a wait are left out as well: `IDLE`). Prints one JSON line: the share of the server's samples spent under each of a few
named parts of the request (inclusive: a frame counts for every part on its stack), and the top
functions by own time. `--flame FILE` also keeps py-spy's collapsed stacks for a flame graph.

    python benchmarks/profile_api.py [--backend postgres] [--endpoint forget-requests|unlearn]
                                     [--clients 32] [--seconds 20] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_api import LIMITS_OUT_OF_THE_WAY, RawConnection  # noqa: E402
from common import API_APP, backends, exit_on_sigterm, machine, serve  # noqa: E402

PARTS = {
    "route in a worker thread (Session)": ("_run_sync_endpoint", "_create_in_session"),
    "model lookup": ("model_and_dataset", "_lookup"),
    "flush and commit": ("Session.flush", "Session.commit"),
    "pool ping on checkout": ("DefaultDialect._do_ping_w_event",),
    "one-statement intake (event loop)": ("take_in_async",),
    "async insert": ("AsyncConnection.execute",),
    "ids: validation, encoding, sha256": ("resolve_forget", "validate_forget_ids"),
    "create_job (flush, webhook lookup)": ("create_job",),
    "webhook lookup": ("record_job_event",),
    "queue limit check": ("check_tenant_queue",),
    "broker publish": ("publish_jobs",),
    "task-sent event": ("EventDispatcher.publish",),
    "API key and rate limit": ("get_tenant",),
    "dependencies and body validation": ("solve_dependencies",),
}
"""A part is the set of stacks with a frame whose function (as py-spy names it, Class.method) is one of these."""
IDLE = frozenset(
    {
        "Connection.wait",
        "Condition.wait",
        "Event.wait",
        "EpollSelector.select",
        "Queue.get",
        "select",
        "sleep",
    }
)
"""Leaf frames of a thread that waits (for the database, for work, for the network): not CPU."""


def _frames(stack: str) -> list[tuple[str, str]]:
    """py-spy's collapsed stack: 'thread;func (file:line);...' as (function, file) pairs, root first."""
    out = []
    for frame in stack.split(";")[1:]:
        name, _, rest = frame.partition(" (")
        out.append((name.strip(), rest.split(":", 1)[0]))
    return out


def breakdown(collapsed: str, top: int) -> dict[str, Any]:
    """Inclusive shares of PARTS and the top own-time functions from py-spy's raw (collapsed) output."""
    total = 0
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = _frames(stack)
        names = {f for f, _ in frames}
        if not frames or frames[-1][0] in IDLE:
            continue
        total += n
        if "Runner.run" in names and not names & {"take_in_async", "_run_sync_endpoint", "get_tenant"}:
            parts["event loop outside the route and the key check"] += n
        for part, funcs in PARTS.items():
            if names & set(funcs):
                parts[part] += n
        leaf, where = frames[-1]
        own[f"{leaf} ({Path(where).name})"] += n
    share = {k: round(v / total, 3) for k, v in parts.most_common()} if total else {}
    return {
        "samples": total,
        "share_inclusive": share,
        "top_own": [(k, round(v / total, 3)) for k, v in own.most_common(top)] if total else [],
    }


async def _load(
    url: str, path: str, body: bytes, headers: dict[str, str], clients: int, seconds: float
) -> int:
    conns = [RawConnection(url, "POST", path, body, headers) for _ in range(clients)]
    deadline = time.perf_counter() + seconds
    done = 0

    async def loop(conn: RawConnection) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await conn.send()
            done += 1

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return done


def main(argv: list[str] | None = None) -> dict[str, Any]:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="postgres", choices=["postgres", "embedded"])
    parser.add_argument("--endpoint", default="forget-requests", choices=["forget-requests", "unlearn"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--flame", type=Path, help="also write py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    chosen, skipped = backends([args.backend])
    if not chosen:
        raise SystemExit(skipped[0]["skipped"])
    backend = chosen[0]
    with serve(
        backend, "profile-api", model="bench", env=LIMITS_OUT_OF_THE_WAY, apps={"ours": API_APP}
    ) as service:
        url, headers, model_id = service.url, service.headers, service.model_id
        body: dict[str, Any] = {"model_id": model_id, "forget_ids": [3, 17, 42], "requested_by": "bench"}
        if args.endpoint == "unlearn":
            body = {"model_id": model_id, "forget_ids": [3, 17, 42], "method": "none"}
        payload = json.dumps(body).encode()
        asyncio.run(_load(url, f"/{args.endpoint}", payload, headers, args.clients, 2.0))  # warm up
        out = service.folder / "stacks.txt"
        spy = subprocess.Popen(
            [
                args.py_spy,
                "record",
                "--pid",
                str(service.servers["ours"].pid),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(out),
                "--duration",
                str(int(args.seconds)),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)
        n = asyncio.run(_load(url, f"/{args.endpoint}", payload, headers, args.clients, args.seconds))
        _, err = spy.communicate(timeout=args.seconds + 120)
        if spy.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
        collapsed = out.read_text()
    if args.flame:
        args.flame.write_text(collapsed)
    record = {
        "bench": "profile_api",
        **machine(),
        "backend": backend.name,
        "endpoint": f"POST /{args.endpoint}",
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": n,
        **breakdown(collapsed, args.top),
    }
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main()
