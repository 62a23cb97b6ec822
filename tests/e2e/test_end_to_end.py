"""A forget request end to end through real processes: HTTP -> database -> Celery worker -> PyTorch -> HTTP.

Once on Postgres + Redis with the exact commands of docker-compose.yml, once on the embedded
default that `lethe up` runs (SQLite database, SQLite broker).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.stack import Processes, free_port, wait_for, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB_TIMEOUT = 300


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _service_env(service: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The service's own environment from the compose file, pointed at this machine's servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update({k: str(v) for k, v in service["environment"].items()})
    env.update(overrides)
    return env


def _forget_two_percent(http: httpx.Client, model: str, logs) -> tuple[dict, dict, list[int]]:
    n_train = next(d["n_train"] for d in http.get("/datasets").json()["data"] if d["name"] == "digits")
    ids = np.random.default_rng(1).choice(n_train, size=round(0.02 * n_train), replace=False).tolist()
    r = http.post("/unlearn", json={"model_id": model, "forget_ids": ids, "method": "finetune"})
    assert r.status_code == 202, r.text
    job = wait_job(http, r.json()["job_id"], JOB_TIMEOUT, logs)
    assert job["status"] == "succeeded", (job, logs())
    metrics = http.get(f"/jobs/{job['id']}/metrics").json()
    return job, metrics, ids


def _check_unlearned(http: httpx.Client, parent_ref: str, job: dict, metrics: dict, ids: list[int]) -> None:
    for key in ("retain_accuracy", "forget_accuracy", "test_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, metrics
    assert metrics["retain_accuracy"] > 0.9, metrics
    assert metrics["wall_seconds"] > 0 and metrics["n_forget"] == len(ids)
    parent = http.get(f"/models/{parent_ref}").json()
    child = http.get(f"/models/{job['result']['model_id']}").json()
    assert (
        child["status"] == "ready" and child["parent_id"] == parent["id"] and child["made_by"] == "finetune"
    )
    assert child["n_forgotten"] == len(ids) and parent["n_forgotten"] == 0
    assert child["lineage"] == [child["id"], parent["id"]]
    assert parent["status"] == "ready"


def _checkpoint_digest(home: Path, model_id: str) -> str:
    return hashlib.sha256(
        (home / "artifacts" / "models" / model_id / "model.safetensors").read_bytes()
    ).hexdigest()


def test_compose_services_run_and_forget_on_postgres_and_redis(pg_env, tmp_path):
    """migrate, api and worker run with docker-compose.yml's commands and environment."""
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    home = tmp_path / "lethe-home"
    port = free_port()
    local = {
        "LETHE_DATABASE_URL": pg_env["LETHE_DATABASE_URL"],
        "LETHE_BROKER_URL": pg_env["LETHE_BROKER_URL"],
        "LETHE_QUEUE": pg_env["LETHE_QUEUE"],
        "LETHE_HOME": str(home),
        "LETHE_ARTIFACT_DIR": str(home / "artifacts"),
        "LETHE_DEVICE": "cpu",
    }
    procs = Processes(tmp_path)
    try:
        migrate = procs.start(
            "migrate", services["migrate"]["command"], _service_env(services["migrate"], local)
        )
        assert migrate.wait(timeout=180) == 0, procs.logs()
        api_cmd = [c if c != "8000" else str(port) for c in services["api"]["command"]]
        api_cmd = [c if c != "0.0.0.0" else "127.0.0.1" for c in api_cmd]
        procs.start("api", api_cmd, _service_env(services["api"], local))
        worker_cmd = [c if c != "lethe" else local["LETHE_QUEUE"] for c in services["worker"]["command"]]
        procs.start("worker", worker_cmd, _service_env(services["worker"], local))
        key = (home / "api-key").read_text().strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"X-API-Key": key}
        ) as http:
            health = wait_for(
                lambda: http.get("/health").status_code == 200 and http.get("/health").json(),
                60,
                "the API",
                procs.logs,
            )
            assert health == {"status": "ok", "database": "ok", "broker": "ok"}
            assert http.get("/models/demo", headers={"X-API-Key": "wrong"}).status_code == 401
            demo = http.get("/models/demo").json()
            train = wait_job(http, demo["job_id"], JOB_TIMEOUT, procs.logs)
            assert train["status"] == "succeeded", (train, procs.logs())
            before = _checkpoint_digest(home, demo["id"])
            job, metrics, ids = _forget_two_percent(http, "demo", procs.logs)
            _check_unlearned(http, "demo", job, metrics, ids)
            assert _checkpoint_digest(home, demo["id"]) == before
    finally:
        procs.stop()


def test_lethe_up_on_the_embedded_default(tmp_path):
    """`lethe up` alone: SQLite database and broker, digits registered, demo trained, a forget request served."""
    home = tmp_path / "var"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["LETHE_HOME"] = str(home)
    procs = Processes(tmp_path)
    try:
        procs.start("up", ["lethe", "up", "--port", str(port)], env)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            wait_for(lambda: http.get("/health").status_code == 200, 120, "lethe up", procs.logs)
            assert http.get("/models/demo").status_code == 401
            http.headers["X-API-Key"] = (home / "api-key").read_text().strip()
            assert "api-key" in procs.logs()
            demo = http.get("/models/demo").json()
            train = wait_job(http, demo["job_id"], JOB_TIMEOUT, procs.logs)
            assert train["status"] == "succeeded", (train, procs.logs())
            assert http.get(f"/jobs/{demo['job_id']}/metrics").json()["test_accuracy"] > 0.9
            job, metrics, ids = _forget_two_percent(http, "demo", procs.logs)
            _check_unlearned(http, "demo", job, metrics, ids)

            # An evaluation fans out over the SQLite broker and is scored by the worker.
            body = {"model_id": "demo", "forget_ids": ids[:10], "method": "none", "n_models": 2}
            created = http.post("/evaluations", json=body)
            assert created.status_code == 202, created.text
            done = wait_job(http, created.json()["job_id"], JOB_TIMEOUT, procs.logs)
            assert done["status"] == "succeeded", (done, procs.logs())
            results = http.get(f"/evaluations/{created.json()['evaluation_id']}").json()["results"]
            assert (
                results["epsilon_hat"] == "inf" and results["n_reference"] == 2 and results["n_samples"] == 10
            )
            assert results["neurips"] is None  # its buckets need at least 3 models per group
    finally:
        procs.stop()
    assert (home / "lethe.sqlite").is_file() and (home / "broker.sqlite").is_file()
