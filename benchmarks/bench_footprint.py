"""What Postgres and Redis hold per job: bytes and rows for a forget request from POST /unlearn to succeeded.

On a fresh Postgres database and a queue of its own on Redis (the local test servers, or
LETHE_BENCH_DATABASE_URL / LETHE_BENCH_BROKER_URL), N forget requests go through the real API app
(in-process, FastAPI's TestClient) with no worker: each stores its request, job and audit rows and
publishes its message. Redis's MEMORY USAGE of the queue gives the bytes per waiting message. Then each
job goes through the state changes a worker makes (claim, five progress reports, succeed with a result
and metrics shaped like an unlearn job's), in this process, and the messages are taken off the queue as
a worker would. Postgres table sizes (pg_total_relation_size: heap, indexes, TOAST) are read before, after
the requests, after the jobs ended, and after VACUUM FULL (the live rows only). The child model row a
real unlearn job adds is not included (it is one row per job, like the job's own). Prints one JSON line
per stage with "bench": "footprint".

    python benchmarks/bench_footprint.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import add_ready_model, backends, drop_queue, fresh_database, machine  # noqa: E402

METRICS = {
    "retain_accuracy": 0.9912,
    "forget_accuracy": 0.9874,
    "test_accuracy": 0.9521,
    "mia_efficacy": 0.0412,
    "wall_seconds": 18.81,
    "epochs": 5,
    "loss": 0.0231,
    "n_forget": 100,
    "n_retain": 49900,
}
"""An unlearn job's metrics have this shape: a handful of numbers."""


def table_sizes(conn: Any) -> dict[str, tuple[int, int]]:
    """(bytes, rows) of every table of the schema, indexes and TOAST included."""
    from sqlalchemy import text

    names = conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
    ).scalars()
    out = {}
    for name in names:
        size = conn.execute(text(f"SELECT pg_total_relation_size('\"{name}\"')")).scalar_one()
        rows = conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
        out[name] = (int(size), int(rows))
    return out


def per_job(after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]], n: int) -> dict[str, Any]:
    """Bytes and rows each job added, by table (tables that did not grow left out) and in all."""
    tables = {}
    for name, (size, rows) in after.items():
        grew = (size - before.get(name, (0, 0))[0], rows - before.get(name, (0, 0))[1])
        if grew != (0, 0):
            tables[name] = {"bytes": round(grew[0] / n), "rows": round(grew[1] / n, 2)}
    total = sum(t["bytes"] for t in tables.values())
    return {"bytes_per_job": total, "tables": tables}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="forget requests to submit")
    args = parser.parse_args()
    found, skipped = backends(["postgres"])
    if not found:
        print(json.dumps({"bench": "footprint", **skipped[0]}))
        return
    backend = found[0]
    home = Path(tempfile.mkdtemp(prefix="lethe-footprint-"))
    queue = f"lethe-footprint-{uuid.uuid4().hex[:8]}"
    with fresh_database(backend, home) as url:
        os.environ.update(
            {
                "LETHE_HOME": str(home),
                "LETHE_DATABASE_URL": url,
                "LETHE_BROKER_URL": backend.broker_url,
                "LETHE_QUEUE": queue,
                "LETHE_RATE_LIMIT": "1000000/minute",
                "LETHE_TENANT_MAX_ACTIVE_JOBS": str(args.jobs + 10),
                "LETHE_MAINTENANCE_SECONDS": "0",
            }
        )
        try:
            run(url, backend.broker_url, args.jobs)
        finally:
            drop_queue(backend, queue)


def run(url: str, broker_url: str, n: int) -> None:
    import redis
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, text

    from api.main import create_app
    from core import jobs
    from core.db import session_scope
    from core.queue import queue_name, worker_queues

    model_id, key = add_ready_model(url, "m1")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    r = redis.Redis.from_url(broker_url)
    with engine.connect() as conn:
        start = table_sizes(conn)
    with TestClient(create_app(), headers={"X-API-Key": key or ""}) as api:
        job_ids = []
        for i in range(n):
            reply = api.post(
                "/unlearn",
                json={
                    "model_id": model_id,
                    "forget_ids": [i % 1000],
                    "method": "finetune",
                    "requested_by": "a@b.c",
                },
            )
            assert reply.status_code == 202, reply.text
            job_ids.append(reply.json()["job_id"])
    forget = queue_name("forget")
    held = r.memory_usage(forget) or 0
    message = sum(len(m) for m in r.lrange(forget, 0, -1)) / n
    with engine.connect() as conn:
        queued = table_sizes(conn)
    common = {"jobs": n, **machine()}
    print(
        json.dumps(
            {
                "bench": "footprint",
                "stage": "queued",
                **common,
                "redis_bytes_per_queued_job": round(held / n),
                "redis_message_bytes": round(message),
                **per_job(queued, start, n),
            }
        )
    )
    for job_id in job_ids:
        with session_scope() as session:
            jobs.claim(session, job_id)
            for step in range(5):
                jobs.report_progress(
                    session, job_id, (step + 1) / 6, {"epoch": step + 1, "loss": 0.1, "eta_seconds": 3}
                )
            jobs.succeed(session, job_id, result={"model_id": str(uuid.uuid4())}, metrics=METRICS)
    r.delete(*worker_queues())  # a worker acknowledges each message once its job has ended
    with engine.connect() as conn:
        ended = table_sizes(conn)
        print(json.dumps({"bench": "footprint", "stage": "succeeded", **common, **per_job(ended, start, n)}))
        conn.execute(text("VACUUM FULL"))
        live = table_sizes(conn)
        print(json.dumps({"bench": "footprint", "stage": "vacuum_full", **common, **per_job(live, start, n)}))
    engine.dispose()


if __name__ == "__main__":
    main()
