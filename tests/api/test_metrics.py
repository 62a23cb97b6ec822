"""GET /metrics: job counters and histograms kept as jobs change state (never falling), jobs by status,
heartbeats and latency; in multiprocess mode the API and a worker's pool processes add up."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from core import jobs
from core.db import session_scope
from core.tables import AuditEvent, ForgetRequest, Job, JobStatus
from tests.conftest import REPO
from tests.e2e.stack import Processes, free_port, wait_for, wait_job
from tests.utils import add_ready_model


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _scrape(client) -> dict:
    r = client.get("/metrics", headers={"X-API-Key": ""})  # no key needed, like /health
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return _families(r.text)


def _value(fams: dict, family: str, sample: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (a counter not yet moved)."""
    if family not in fams:
        return 0.0
    found = [s.value for s in fams[family].samples if s.name == sample and s.labels == labels]
    return found[0] if found else 0.0


def _counts(fams: dict) -> dict[str, float]:
    """The job counters and histogram counts this test moves, for the unlearn kind."""
    return {
        "queued": _value(fams, "lethe_jobs_queued", "lethe_jobs_queued_total", kind="unlearn"),
        "started": _value(fams, "lethe_jobs_started", "lethe_jobs_started_total", kind="unlearn"),
        "succeeded": _value(
            fams, "lethe_jobs_finished", "lethe_jobs_finished_total", kind="unlearn", outcome="succeeded"
        ),
        "cancelled": _value(
            fams, "lethe_jobs_finished", "lethe_jobs_finished_total", kind="unlearn", outcome="cancelled"
        ),
        "waits": _value(
            fams, "lethe_job_queue_wait_seconds", "lethe_job_queue_wait_seconds_count", kind="unlearn"
        ),
        "durations": _value(
            fams,
            "lethe_job_duration_seconds",
            "lethe_job_duration_seconds_count",
            kind="unlearn",
            outcome="succeeded",
        ),
    }


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def _submit(client, n: int) -> list[str]:
    return [
        client.post("/unlearn", json={"model_id": "m1", "forget_ids": [i], "method": "none"}).json()["job_id"]
        for i in range(1, n + 1)
    ]


def test_metrics_count_jobs_and_time_them(client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    before = _counts(_scrape(client))
    ids = _submit(client, 3)
    with session_scope() as session:
        jobs.claim(session, ids[0])
        jobs.claim(session, ids[1])
        jobs.succeed(session, ids[1], result={}, metrics=None)
    fams = _scrape(client)
    assert _delta(_counts(fams), before) == {
        "queued": 3,
        "started": 2,
        "succeeded": 1,
        "cancelled": 0,
        "waits": 2,
        "durations": 1,
    }
    counts = {(s.labels["kind"], s.labels["status"]): s.value for s in fams["lethe_jobs"].samples}
    assert counts == {("unlearn", "queued"): 1, ("unlearn", "running"): 1, ("unlearn", "succeeded"): 1}
    beats = fams["lethe_worker_heartbeat_age_seconds"].samples
    assert len(beats) == 1 and 0 <= beats[0].value < 60
    latency = [
        s
        for s in fams["lethe_http_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["route"] == "/unlearn" and s.labels["status"] == "202"
    ]
    assert latency and latency[0].value >= 3, [
        s for s in fams["lethe_http_request_duration_seconds"].samples if s.name.endswith("_count")
    ]


def test_counters_never_fall_when_job_rows_go_and_keep_counting_after(client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    before = _counts(_scrape(client))
    ids = _submit(client, 2)
    with session_scope() as session:
        jobs.claim(session, ids[0])
        jobs.succeed(session, ids[0], result={}, metrics=None)
    assert client.post(f"/jobs/{ids[1]}/cancel").status_code in (200, 202)
    counted = _counts(_scrape(client))
    assert _delta(counted, before) == {
        "queued": 2,
        "started": 1,
        "succeeded": 1,
        "cancelled": 1,
        "waits": 1,
        "durations": 1,
    }
    with session_scope() as session:  # retention (or a careless operator) removes the job history
        session.execute(delete(AuditEvent))
        session.execute(delete(ForgetRequest))
        session.execute(delete(Job))
    fams = _scrape(client)
    assert _counts(fams) == counted
    assert fams["lethe_jobs"].samples == []  # the state gauge follows the table, as a gauge should
    ids = _submit(client, 1)
    with session_scope() as session:
        jobs.claim(session, ids[0])
    assert _delta(_counts(_scrape(client)), counted)["started"] == 1


def test_a_state_change_rolled_back_counts_for_nothing(client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    (job_id,) = _submit(client, 1)
    before = _counts(_scrape(client))
    with pytest.raises(RuntimeError), session_scope() as session:
        assert jobs.claim(session, job_id) is not None
        session.flush()
        raise RuntimeError("the worker died before committing")
    with session_scope() as session:
        assert session.get(Job, job_id).status == JobStatus.queued
    assert _counts(_scrape(client)) == before


def test_the_first_session_of_a_fresh_process_counts_too(tmp_path):
    """`lethe migrate --bootstrap` (and `lethe up`) queue the demo in a fresh process: counted."""
    script = (
        "from cli.main import migrate; migrate(bootstrap=True, wait=5)\n"
        "from core.jobmetrics import QUEUED; print(QUEUED.labels('train')._value.get())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LETHE_", "PROMETHEUS_"))}
    env["LETHE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "1.0"


@pytest.mark.e2e
@pytest.mark.slow
def test_api_and_worker_processes_add_up_in_multiprocess_mode(pg_env, tmp_path):
    """A real API and a real Celery worker (its pool process runs the job) share one metrics folder;
    the API's /metrics and the worker's metrics port both show the whole host's figures."""
    api_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(pg_env)
    env.update(
        {
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            "LETHE_WORKER_METRICS_PORT": str(metrics_port),
            "LETHE_DEVICE": "cpu",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        }
    )
    procs = Processes(tmp_path)
    try:
        procs.start(
            "api",
            [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(api_port), "--workers", "2"],
            env,
        )
        from cli.main import worker_command

        procs.start("worker", worker_command(concurrency=1), env)
        from core.bootstrap import ensure_digits
        from tests.utils import new_key

        key = new_key("local")
        with session_scope() as session:
            ensure_digits(session)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}", headers={"X-API-Key": key}, timeout=30
        ) as http:
            wait_for(lambda: http.get("/health").status_code == 200, 120, "the API", procs.logs)
            body = {"name": "tiny", "dataset": "digits", "arch": {"width": 4}, "recipe": {"epochs": 1}}
            created = http.post("/models", json=body)
            assert created.status_code == 202, created.text
            done = wait_job(http, created.json()["job_id"], 300, procs.logs)
            assert done["status"] == "succeeded", (done, procs.logs())
            for url in (f"http://127.0.0.1:{api_port}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"):
                fams = _families(httpx.get(url, timeout=30).text)
                train = {"kind": "train"}
                assert _value(fams, "lethe_jobs_queued", "lethe_jobs_queued_total", **train) == 1, url
                assert _value(fams, "lethe_jobs_started", "lethe_jobs_started_total", **train) == 1, url
                outcome = {"kind": "train", "outcome": "succeeded"}
                assert _value(fams, "lethe_jobs_finished", "lethe_jobs_finished_total", **outcome) == 1, url
                assert (
                    _value(fams, "lethe_job_duration_seconds", "lethe_job_duration_seconds_count", **outcome)
                    == 1
                ), url
    finally:
        procs.stop()
    assert any(p.name.startswith("counter_") for p in (tmp_path / "metrics").iterdir())


def test_published_jobs_send_task_events_for_flower(client):
    """Celery task events are on (Flower shows tasks from them): publishing a job sends task-sent."""
    from core.queue import get_celery
    from core.services import publish_jobs

    with session_scope() as session:
        add_ready_model(session, "m1")
    (job_id,) = _submit(client, 1)
    app = get_celery()
    assert app.conf.worker_send_task_events  # the worker's own task-started/succeeded events
    seen = threading.Event()

    def on_sent(event: dict) -> None:
        if event.get("uuid") == job_id:
            seen.set()
            receiver.should_stop = True

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"task-sent": on_sent})
        listener = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": 60}, daemon=True
        )
        listener.start()
        for _ in range(60):  # events are fire-and-forget: publish again until the listener is subscribed
            publish_jobs([job_id])
            if seen.wait(0.5):
                break
        receiver.should_stop = True
        listener.join(10)
    assert seen.is_set()


def test_a_worker_metrics_port_without_a_metrics_folder_is_refused(monkeypatch):
    """Pool processes could hand the port nothing: the worker must not start as if it were counting."""
    from core.jobmetrics import serve_worker_metrics

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(RuntimeError, match="LETHE_WORKER_METRICS_PORT=9808 needs PROMETHEUS_MULTIPROC_DIR"):
        serve_worker_metrics(9808)
