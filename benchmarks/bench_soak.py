"""Soak: N forget requests over T seconds from many clients, batched by a forget policy, one worker.

Real processes, as bench_queue starts them: the API (`uvicorn api.main:app`, whose maintenance sweep runs
the batch scheduler every --sweep-seconds) and one Celery worker (concurrency 1, one torch thread, CPU),
on the embedded default and, when reachable, Postgres + Redis (LETHE_BENCH_DATABASE_URL /
LETHE_BENCH_BROKER_URL, else the local test servers; a fresh database is created and dropped). A tiny
ResNet-18 is trained through the API, its forget policy set (method `none`, window --window seconds, no
limits), then --clients clients send --requests `POST /forget-requests` spread evenly over --seconds
(request i is due at i * T / N; a client sends its next due request as soon as its last one answered),
each with its own external_ref and one to three random sample ids (a send that loses its connection or
gets a 5xx is sent again, as a client may safely do with an external_ref). Then it waits until every request is
fulfilled and checks, in the database:

- none lost: every request was accepted (202, or 200 for a retry whose first send had been stored), the
  answers name exactly the stored requests, and no request was stored twice;
- exactly once: every request is fulfilled, by one batch, with one `scheduled` and one `fulfilled` event;
- the batches are what the policy says: no batch started before its oldest request was --window old,
  none started later than one sweep (plus --slack seconds) after it was due, where due is the later of
  the window's end and the end of the batch before it (one batch per model at a time), and no two ran
  at once;
- lineage: the last version has forgotten exactly the union of every request's ids.

Prints one JSON line per backend: the checks, intake latency (p50/p99/max ms, requests/s achieved), time
from a request's arrival to its fulfilment (p50/p99/max s), and the batches (count, sizes, run times).
Exits non-zero when a check fails.

    python benchmarks/bench_soak.py [--backends embedded,postgres] [--requests 10000] [--seconds 300]
                                    [--clients 32] [--window 30] [--sweep-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_queue import TINY_MODEL, wait_finished  # noqa: E402
from common import (  # noqa: E402
    REPO,
    Backend,
    as_utc,
    backends,
    exit_on_sigterm,
    machine,
    percentile,
    serve,
)

RETRIES = 5
"""Sends of one request after a lost connection or a 5xx, as a client with an external_ref may retry."""
RATE_LIMIT = "1000000000/minute"
"""The per-tenant limit is raised out of the way: the soak measures intake and batching, not refusals."""


async def send_all(
    url: str,
    headers: dict[str, str],
    model: str,
    n: int,
    seconds: float,
    clients: int,
    n_train: int,
    seed: int,
) -> tuple[list[dict[str, Any]], float]:
    """Send n requests due evenly over `seconds` from `clients` connections; each answer with its latency."""
    import httpx

    rng = random.Random(seed)
    bodies = [
        {
            "model_id": model,
            "forget_ids": rng.sample(range(n_train), rng.randint(1, 3)),
            "requested_by": "soak",
            "external_ref": f"soak-{i}",
        }
        for i in range(n)
    ]
    answers: list[dict[str, Any]] = []
    next_index = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as http:
        start = time.perf_counter()

        async def client() -> None:
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                delay = start + i * seconds / n - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                errors: list[str] = []
                while (
                    True
                ):  # a lost connection is retried with the same body: its external_ref makes that safe
                    try:
                        r = await http.post("/forget-requests", json=bodies[i])
                        status, body = r.status_code, (r.json() if r.status_code < 500 else {})
                    except httpx.TransportError as exc:
                        status, body = type(exc).__name__, {}
                    if status in (200, 202) or len(errors) >= RETRIES:
                        break
                    errors.append(str(status))
                answers.append(
                    {
                        "i": i,
                        "status": status,
                        "id": body.get("forget_request_id"),
                        "ms": 1000 * (time.perf_counter() - sent),
                        "ids": bodies[i]["forget_ids"],
                        "retried": errors,
                    }
                )

        await asyncio.gather(*(client() for _ in range(clients)))
        return answers, time.perf_counter() - start


def check(
    db_url: str, policy_model: str, answers: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """The soak's checks and timings, read from the database."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from core import idsets
    from core.db import make_engine
    from core.tables import AuditEvent, ForgetPolicy, ForgetRequest, Job, Model

    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            requests = {r.id: r for r in session.execute(select(ForgetRequest)).scalars()}
            events = Counter(
                (object_id, event)
                for object_id, event in session.execute(
                    select(AuditEvent.object_id, AuditEvent.event).where(
                        AuditEvent.object_type == "forget_request"
                    )
                )
            )
            fulfilled_at = dict(
                session.execute(
                    select(AuditEvent.object_id, AuditEvent.at).where(
                        AuditEvent.object_type == "forget_request", AuditEvent.event == "fulfilled"
                    )
                ).all()
            )
            batches = list(
                session.execute(
                    select(Job).where(Job.kind == "forget_batch").order_by(Job.created_at)
                ).scalars()
            )
            policy = session.get(ForgetPolicy, policy_model)
            head = session.get(Model, policy.head_model_id) if policy and policy.head_model_id else None
            head_forgotten = idsets.decode(head.forgotten_ids).tolist() if head else []
    finally:
        engine.dispose()
    accepted = [a for a in answers if a["status"] in (200, 202)]
    answered_ids = {a["id"] for a in accepted}
    members: dict[str, list[ForgetRequest]] = {}
    for r in requests.values():
        members.setdefault(r.job_id, []).append(r)
    window = timedelta(seconds=args.window)
    late_allowed = timedelta(seconds=args.sweep_seconds + args.slack)
    early, late, overlapping = [], [], []
    previous_end = None
    for job in batches:
        started = as_utc(job.created_at)
        oldest = (
            min(as_utc(r.created_at) for r in members.get(job.id, [])) if members.get(job.id) else started
        )
        due = max(oldest + window, previous_end) if previous_end else oldest + window
        if started < oldest + window:
            early.append(job.id)
        if started > due + late_allowed:
            late.append(job.id)
        if previous_end is not None and started < previous_end:
            overlapping.append(job.id)
        previous_end = as_utc(job.finished_at) if job.finished_at else started
    once = [
        r.id
        for r in requests.values()
        if r.status == "fulfilled"
        and r.job_id in {b.id for b in batches}
        and r.result_model_id
        and events[(r.id, "scheduled")] == 1
        and events[(r.id, "fulfilled")] == 1
    ]
    asked = sorted({i for a in accepted for i in a["ids"]})
    to_fulfil = [
        (as_utc(fulfilled_at[r.id]) - as_utc(r.created_at)).total_seconds()
        for r in requests.values()
        if r.id in fulfilled_at
    ]
    runs = [
        (as_utc(b.finished_at) - as_utc(b.started_at)).total_seconds()
        for b in batches
        if b.finished_at and b.started_at
    ]
    checks = {
        "none_lost": len(accepted) == len(answers) == len(answered_ids) == args.requests
        and answered_ids == set(requests),
        "exactly_once": len(once) == len(requests) == args.requests,
        "batches_as_the_policy_says": not (early or late or overlapping)
        and all(b.status == "succeeded" for b in batches),
        "lineage_keeps_every_id": head_forgotten == asked,
    }
    return {
        "checks": checks,
        "passed": all(checks.values()),
        "answers": dict(Counter(str(a["status"]) for a in answers)),
        "retried": dict(Counter(e for a in answers for e in a["retried"])),
        "stored": len(requests),
        "fulfilled_once": len(once),
        "batches": {
            "count": len(batches),
            "sizes": [len(members.get(b.id, [])) for b in batches],
            "early": early,
            "late": late,
            "overlapping": overlapping,
            "run_s_median": round(sorted(runs)[len(runs) // 2], 3) if runs else None,
            "run_s_max": round(max(runs), 3) if runs else None,
        },
        "request_to_fulfilled_s": {
            "p50": round(percentile(to_fulfil, 50), 3),
            "p99": round(percentile(to_fulfil, 99), 3),
            "max": round(max(to_fulfil), 3) if to_fulfil else None,
        },
    }


def bench_backend(backend: Backend, args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from tests.e2e.stack import wait_for

    env = {
        "LETHE_DEVICE": "cpu",
        "LETHE_TORCH_THREADS": "1",
        "LETHE_RATE_LIMIT": RATE_LIMIT,
        "LETHE_MAINTENANCE_SECONDS": str(args.sweep_seconds),
    }
    with serve(backend, "bench-soak", worker=True, env=env) as service:
        url, headers = service.url, service.headers
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            created = http.post("/models", json=TINY_MODEL)
            if created.status_code != 202:
                raise RuntimeError(f"POST /models answered {created.status_code}: {created.text}")
            wait_finished(http, created.json()["job_id"], service.logs)
            model = created.json()["model_id"]
            n_train = next(
                d["n_train"] for d in http.get("/datasets").json()["data"] if d["name"] == "digits"
            )
            policy = {"method": "none", "window_seconds": args.window}
            put = http.put(f"/models/{model}/forget-policy", json=policy)
            if put.status_code != 200:
                raise RuntimeError(f"PUT forget-policy answered {put.status_code}: {put.text}")
        answers, took = asyncio.run(
            send_all(url, headers, model, args.requests, args.seconds, args.clients, n_train, args.seed)
        )
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            wait_for(
                lambda: (
                    http.get("/forget-requests", params={"status": "fulfilled", "limit": 1}).json()["count"]
                    >= sum(a["status"] == 202 for a in answers)
                ),
                args.window + args.sweep_seconds + args.fulfil_timeout,
                "every request fulfilled",
                service.logs,
            )
        figures = check(service.database_url, model, answers, args)
    latencies = [a["ms"] for a in answers]
    record = {
        **setup,
        "backend": backend.name,
        "broker": "redis" if backend.name == "postgres" else "sqla+sqlite",
        "intake": {
            "requests": len(answers),
            "seconds": round(took, 2),
            "req_per_s": round(len(answers) / took, 1),
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "max_ms": round(max(latencies), 2),
        },
        **figures,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(record), flush=True)
    return record


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, soak every backend that can run here, print one JSON line per backend."""
    exit_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="embedded,postgres", help="comma-separated: embedded, postgres")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300.0, help="spread the requests over this long")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--window", type=float, default=30.0, help="the policy's window_seconds")
    parser.add_argument("--sweep-seconds", type=float, default=10.0, help="LETHE_MAINTENANCE_SECONDS")
    parser.add_argument("--slack", type=float, default=5.0, help="seconds a batch may start past one sweep")
    parser.add_argument("--fulfil-timeout", type=float, default=600.0, help="extra seconds to wait")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup = {
        "bench": "soak",
        "device": "cpu",
        **machine(),
        "requests": args.requests,
        "seconds": args.seconds,
        "clients": args.clients,
        "window_s": args.window,
        "sweep_s": args.sweep_seconds,
        "worker": "celery prefork, concurrency 1, LETHE_TORCH_THREADS=1",
        "method": "none",
    }
    chosen, skipped = backends(args.backends.split(","))
    for record in skipped:
        print(json.dumps({"bench": "soak", **record}), flush=True)
    records = [bench_backend(backend, args, setup) for backend in chosen]
    if not all(r["passed"] for r in records):
        raise SystemExit(1)
    return records


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
