"""Queue overhead: from POST /unlearn to `running`, and from `running` to `succeeded` beside the method's time.

Real processes, as the end-to-end tests start them: the API (`uvicorn api.main:app`) and one Celery
worker (`lethe up`'s worker command, concurrency 1, one torch thread, CPU), on the embedded default
(SQLite database and SQLite broker in a temporary LETHE_HOME) and, when reachable, Postgres + Redis
(LETHE_BENCH_DATABASE_URL / LETHE_BENCH_BROKER_URL, else the local test servers; a fresh database is
created and dropped). A tiny ResNet-18 (width 4, one epoch on digits) is trained through the API first,
which also loads torch in the worker's pool process; one untimed `none` job follows, then --repeats
timed `none` jobs (an unchanged copy: the method itself takes milliseconds), one at a time.

Timestamps come from the job row (created_at, started_at, finished_at) and, for the method, from the job's
metrics (wall_seconds, and method_finished_at, which the worker records when the method returns); the
POST's send time is this process's clock (same machine). `method_end_to_succeeded_s` is finished_at minus
method_finished_at, both the worker's clock: what the worker does after the method (evaluating, writing
the new checkpoint, the final commit). Prints one JSON line per backend with the median and p90 of each
interval.

    python benchmarks/bench_queue.py [--backends embedded,postgres] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

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

TINY_MODEL = {
    "name": "tiny",
    "dataset": "digits",
    "arch": {"width": 4},
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05, "schedule": "none"},
}
POLL_S = 0.05
RATE_LIMIT = "1000000000/minute"
"""Polling every POLL_S would pass the default per-tenant limit; the limit is not what is measured."""
JOB_TIMEOUT_S = 300.0
FINISHED = ("succeeded", "failed", "cancelled")


def wait_finished(http: Any, job_id: str, logs: Any) -> dict[str, Any]:
    """Poll the job every POLL_S until it is finished; fails on timeout or an unsuccessful end."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}\n{logs()}")
            return job
        time.sleep(POLL_S)
    raise RuntimeError(f"job {job_id} did not finish within {JOB_TIMEOUT_S}s\n{logs()}")


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "p90": round(percentile(values, 90), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def bench_backend(backend: Backend, repeats: int, setup: dict[str, Any]) -> dict[str, Any]:
    """Start the API and a worker on one backend, time `repeats` none-method jobs; returns the record."""
    import httpx

    env = {"LETHE_DEVICE": "cpu", "LETHE_TORCH_THREADS": "1"}
    with (
        serve(backend, "bench-queue", worker=True, env=env) as service,
        httpx.Client(base_url=service.url, headers=service.headers, timeout=30) as http,
    ):
        created = http.post("/models", json=TINY_MODEL)
        if created.status_code != 202:
            raise RuntimeError(f"POST /models answered {created.status_code}: {created.text}")
        train = wait_finished(http, created.json()["job_id"], service.logs)
        body = {"model_id": "tiny", "method": "none"}
        wait_finished(
            http, http.post("/unlearn", json={**body, "forget_ids": [0]}).json()["job_id"], service.logs
        )
        rows: list[dict[str, float]] = []
        for i in range(repeats):
            sent = time.time()
            answer = http.post("/unlearn", json={**body, "forget_ids": [i + 1]})
            if answer.status_code != 202:
                raise RuntimeError(f"POST /unlearn answered {answer.status_code}: {answer.text}")
            job_id = answer.json()["job_id"]
            job = wait_finished(http, job_id, service.logs)
            metrics = http.get(f"/jobs/{job_id}/metrics").json()
            method_s, method_end = float(metrics["wall_seconds"]), as_utc(metrics["method_finished_at"])
            created_at, started, finished = (
                as_utc(job[k]) for k in ("created_at", "started_at", "finished_at")
            )
            rows.append(
                {
                    "post_to_running_s": started.timestamp() - sent,
                    "created_to_running_s": (started - created_at).total_seconds(),
                    "running_to_succeeded_s": (finished - started).total_seconds(),
                    "method_s": method_s,
                    "method_end_to_succeeded_s": (finished - method_end).total_seconds(),
                    "post_to_succeeded_s": finished.timestamp() - sent,
                }
            )
    record = {
        **setup,
        "backend": backend.name,
        "broker": "redis" if backend.name == "postgres" else "sqla+sqlite",
        "repeats": repeats,
        "tiny_model_train_s": round(
            (as_utc(train["finished_at"]) - as_utc(train["started_at"])).total_seconds(), 3
        ),
        **{name: summarise([row[name] for row in rows]) for name in rows[0]},
    }
    print(json.dumps(record), flush=True)
    return record


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    exit_on_sigterm()
    """Parse arguments and bench every backend that can run here, one JSON line each."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="embedded,postgres", help="comma-separated: embedded, postgres")
    parser.add_argument("--repeats", type=int, default=10, help="timed jobs per backend")
    args = parser.parse_args(argv)
    setup = {
        "bench": "queue",
        "device": "cpu",
        "worker": "celery prefork, concurrency 1, LETHE_TORCH_THREADS=1",
        "method": "none",
        "model": {"arch": TINY_MODEL["arch"], "dataset": "digits"},
        "poll_s": POLL_S,
        **machine(),
    }
    chosen, skipped = backends(args.backends.split(","))
    for record in skipped:
        print(json.dumps({"bench": "queue", **record}), flush=True)
    return [bench_backend(backend, args.repeats, setup) for backend in chosen]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
