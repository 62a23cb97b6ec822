"""A forget request end to end through real processes: HTTP -> database -> Celery worker -> PyTorch -> HTTP.

Once on Postgres + Redis with the exact commands of docker-compose.yml, once on the embedded
default that `lethe up` runs (SQLite database, SQLite broker).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO
from tests.core.s3server import moto_server, s3_client
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


def _forget_scores(http: httpx.Client, model: dict, ids: list[int]) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on the forget set of the model's downloaded checkpoint, computed here."""
    import torch
    import torch.nn.functional as F

    from ml import checkpoint
    from ml.data import load_dataset
    from ml.logits import logits

    digits = load_dataset("digits")
    blob = http.get(f"/models/{model['id']}/weights").content  # from whichever store holds it
    net = checkpoint.from_bytes(blob, model["arch"], digits.num_classes, digits.in_channels)
    z = torch.as_tensor(logits(net, digits, np.array(ids)))
    y = torch.as_tensor(digits.train_y[ids])
    return float((z.argmax(1) == y).double().mean()), float(F.cross_entropy(z, y))


def _check_unlearned(http: httpx.Client, parent_ref: str, job: dict, metrics: dict, ids: list[int]) -> None:
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
    # The forget set's outputs moved: fine-tuning the demo model changed its mean loss there by a factor
    # of 0.10 to 0.29 over five random 2% forget sets; a child that is its parent's copy changes nothing.
    child_accuracy, child_loss = _forget_scores(http, child, ids)
    _, parent_loss = _forget_scores(http, parent, ids)
    assert metrics["forget_accuracy"] == pytest.approx(child_accuracy, abs=1e-9), metrics
    assert abs(child_loss / parent_loss - 1) > 0.2, (child_loss, parent_loss)


def _finished(metrics_text: str, kind: str) -> float:
    """lethe_jobs_finished_total of one kind that succeeded, from Prometheus text."""
    return sum(
        s.value
        for f in text_string_to_metric_families(metrics_text)
        for s in f.samples
        if s.name == "lethe_jobs_finished_total" and s.labels == {"kind": kind, "outcome": "succeeded"}
    )


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """An S3 server standing in for compose's MinIO."""
    with moto_server() as url:
        yield url


def test_compose_services_run_and_forget_on_postgres_and_redis(pg_env, s3_endpoint, tmp_path):
    """migrate, api and worker run with docker-compose.yml's commands and environment; artifacts go to the
    S3 server (no shared folder), and the worker serves its job metrics on its port."""
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "minio", "minio-init"} <= set(services)
    artifacts = urlsplit(services["api"]["environment"]["LETHE_ARTIFACT_URL"])
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=artifacts.netloc)  # what compose's minio-init does
    home = tmp_path / "lethe-home"
    port, worker_metrics = free_port(), free_port()
    local = {
        "LETHE_DATABASE_URL": pg_env["LETHE_DATABASE_URL"],
        "LETHE_BROKER_URL": pg_env["LETHE_BROKER_URL"],
        "LETHE_QUEUE": pg_env["LETHE_QUEUE"],
        "LETHE_HOME": str(home),
        "LETHE_DEVICE": "cpu",
        "LETHE_S3_ENDPOINT_URL": s3_endpoint,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LETHE_WORKER_METRICS_PORT": str(worker_metrics),
    }

    def checkpoint_digest(model_id: str) -> str:
        key = f"{artifacts.path.strip('/')}/models/{model_id}/model.safetensors"
        return hashlib.sha256(s3.get_object(Bucket=artifacts.netloc, Key=key)["Body"].read()).hexdigest()

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
            before = checkpoint_digest(demo["id"])
            job, metrics, ids = _forget_two_percent(http, "demo", procs.logs)
            _check_unlearned(http, "demo", job, metrics, ids)
            assert checkpoint_digest(demo["id"]) == before
            counted = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics", timeout=30).text
            assert _finished(counted, "train") == 1 and _finished(counted, "unlearn") == 1, counted
    finally:
        procs.stop()
    assert not (home / "artifacts" / "models").exists()  # nothing went to a local artifact folder


def test_lethe_up_on_the_embedded_default(tmp_path):
    """`lethe up` alone: SQLite database and broker, digits registered, demo trained, a forget request served."""
    home = tmp_path / "var"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LETHE_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
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
            # The worker's pool process counted its jobs; `lethe up` gives it and the API one metrics folder.
            assert _finished(http.get("/metrics").text, "unlearn") == 1

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
