"""GET /metrics: Prometheus text with jobs by kind and status, durations, waits, heartbeats, latency."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from core import jobs
from core.db import session_scope
from tests.utils import add_ready_model


def _families(client) -> dict:
    r = client.get("/metrics", headers={"X-API-Key": ""})  # no key needed, like /health
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def test_metrics_count_jobs_and_time_them(client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    ids = [
        client.post("/unlearn", json={"model_id": "m1", "forget_ids": [i], "method": "none"}).json()["job_id"]
        for i in (1, 2, 3)
    ]
    with session_scope() as session:
        jobs.claim(session, ids[0])
        jobs.claim(session, ids[1])
        jobs.succeed(session, ids[1], result={}, metrics=None)
    fams = _families(client)
    counts = {(s.labels["kind"], s.labels["status"]): s.value for s in fams["lethe_jobs"].samples}
    assert counts == {("unlearn", "queued"): 1, ("unlearn", "running"): 1, ("unlearn", "succeeded"): 1}
    waits = {s.name: s.value for s in fams["lethe_job_queue_wait_seconds"].samples}
    assert waits["lethe_job_queue_wait_seconds_count"] == 1
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
