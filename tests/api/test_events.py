"""GET /jobs/{id}/events: a job followed as server-sent events, over real HTTP; the client's wait() on it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from client import Client, NotFound, WaitTimeout
from core import jobs
from core.db import session_scope
from core.tables import JobStatus
from tests.client import serve
from tests.utils import add_ready_model, new_key


def _queued_job() -> str:
    with session_scope() as session:
        model = add_ready_model(session, "sse")
        return jobs.create_job(session, "unlearn", tenant_id="local", params={}, model_id=model.id).id


def _events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of a text/event-stream; comments skipped."""
    event, data = None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line:
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            continue
        yield event, json.loads("\n".join(data))
        event, data = None, []


@pytest.fixture
def live(pg_env) -> Iterator[tuple[str, dict[str, str]]]:
    with serve() as url:
        yield url, {"X-API-Key": new_key("local")}


def test_the_stream_sends_each_change_then_end(live):
    url, headers = live
    job_id = _queued_job()
    with (
        httpx.Client(base_url=url, headers=headers, timeout=30) as http,
        http.stream("GET", f"/jobs/{job_id}/events", params={"interval": 0.1}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = _events(response)
        event, job = next(stream)
        assert event == "job" and job["id"] == job_id and job["status"] == "queued"
        assert set(job) == set(http.get(f"/jobs/{job_id}").json())

        with session_scope() as session:
            jobs.claim(session, job_id)
        event, job = next(stream)
        assert (event, job["status"], job["progress"]) == ("job", "running", 0.0)

        with session_scope() as session:
            jobs.report_progress(session, job_id, 0.5, {"stage": "finetune", "epoch": 1, "epochs": 2})
        event, job = next(stream)
        assert job["progress"] == 0.5 and job["progress_info"]["epoch"] == 1

        with session_scope() as session:
            jobs.succeed(session, job_id, result={"model_id": "m"}, metrics={})
        event, job = next(stream)
        assert (event, job["status"], job["result"]) == ("job", "succeeded", {"model_id": "m"})
        assert next(stream) == ("end", {})
        assert next(stream, None) is None  # the server closed the stream


def test_a_finished_job_streams_once_and_unknown_jobs_are_404(live):
    url, headers = live
    job_id = _queued_job()
    with session_scope() as session:
        jobs.finish_unsuccessfully(session, job_id, JobStatus.cancelled, "cancelled on request")
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        with http.stream("GET", f"/jobs/{job_id}/events") as response:
            events = list(_events(response))
        assert [e for e, _ in events] == ["job", "end"] and events[0][1]["status"] == "cancelled"
        assert http.get("/jobs/nope/events").status_code == 404
        assert http.get(f"/jobs/{job_id}/events", headers={"X-API-Key": "wrong"}).status_code == 401
        assert http.get(f"/jobs/{job_id}/events", params={"interval": 0}).status_code == 422
        other = {"X-API-Key": new_key("other")}
        assert http.get(f"/jobs/{job_id}/events", headers=other).status_code == 404


def test_client_wait_follows_the_stream_and_times_out(live):
    url, headers = live
    job_id = _queued_job()
    with Client(url, api_key=headers["X-API-Key"]) as api:
        with pytest.raises(WaitTimeout, match="still queued"):
            list(api.wait(job_id, poll=0.1, timeout=0.5))
        with session_scope() as session:
            jobs.claim(session, job_id)
            jobs.succeed(session, job_id, result={}, metrics={})
        assert [j.status for j in api.events(job_id)] == ["succeeded"]
        assert api.wait_done(job_id, poll=0.1).status == "succeeded"
        with pytest.raises(NotFound):
            list(api.events("nope"))


def _job_json(job_id: str, status: str, progress: float) -> dict:
    return {
        "id": job_id,
        "kind": "unlearn",
        "status": status,
        "progress": progress,
        "progress_info": {},
        "error": None,
        "attempts": 1,
        "model_id": None,
        "forget_request_id": None,
        "result": None,
        "created_at": "2026-11-29T10:00:00Z",
        "started_at": None,
        "finished_at": None,
        "updated_at": "2026-11-29T10:00:00Z",
    }


def test_wait_uses_the_stream_instead_of_polling_and_polls_servers_without_it():
    """A stand-in server: one GET /jobs/{id}, then the stream; without a stream, polls."""
    calls: list[str] = []
    stream = "".join(
        f"event: job\ndata: {json.dumps(_job_json('j1', s, p))}\n\n"
        for s, p in (("queued", 0.0), ("running", 0.5), ("succeeded", 1.0))
    )
    polls = iter([("running", 0.5), ("succeeded", 1.0)])

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/jobs/j1/events":
            return httpx.Response(200, text=": hi\n\n" + stream + "event: end\ndata: {}\n\n")
        if request.url.path == "/jobs/j2/events":
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path == "/jobs/j1":
            return httpx.Response(200, json=_job_json("j1", "queued", 0.0))
        if len(calls) == 1:
            return httpx.Response(200, json=_job_json("j2", "queued", 0.0))
        status, progress = next(polls)
        return httpx.Response(200, json=_job_json("j2", status, progress))

    with Client("http://lethe.test", transport=httpx.MockTransport(handler)) as api:
        assert [(j.status, j.progress) for j in api.wait("j1")] == [
            ("queued", 0.0),
            ("running", 0.5),
            ("succeeded", 1.0),
        ]
        assert calls == ["/jobs/j1", "/jobs/j1/events"]
        calls.clear()
        assert [j.status for j in api.wait("j2", poll=0.01)] == ["queued", "running", "succeeded"]
        assert calls == ["/jobs/j2", "/jobs/j2/events", "/jobs/j2", "/jobs/j2"]


def test_a_stream_ends_after_its_longest_time_and_the_client_follows_on(live, monkeypatch):
    url, headers = live
    monkeypatch.setattr("api.routes.events.MAX_STREAM_SECONDS", 0.5)
    job_id = _queued_job()
    with (
        httpx.Client(base_url=url, headers=headers, timeout=30) as http,
        http.stream("GET", f"/jobs/{job_id}/events", params={"interval": 0.1}) as response,
    ):
        events = list(_events(response))
    assert [(e, j["status"]) for e, j in events] == [("job", "queued")]  # closed without `end`

    calls: list[str] = []
    streams = iter(
        [
            f"event: job\ndata: {json.dumps(_job_json('j3', 'running', 0.5))}\n\n",
            f"event: job\ndata: {json.dumps(_job_json('j3', 'succeeded', 1.0))}\n\nevent: end\ndata: {{}}\n\n",
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text=next(streams))
        return httpx.Response(200, json=_job_json("j3", "queued", 0.0))

    with Client("http://lethe.test", transport=httpx.MockTransport(handler)) as api:
        assert [j.status for j in api.wait("j3")] == ["queued", "running", "succeeded"]
    assert calls == ["/jobs/j3", "/jobs/j3/events", "/jobs/j3/events"]
