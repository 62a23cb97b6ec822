"""Webhooks and 202 answers: long jobs say when they are done."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from api.schemas import JobPublic
from core import jobs
from core.db import session_scope
from core.settings import get_settings
from core.tables import JobStatus, WebhookDelivery, utcnow
from core.webhooks import JOB_FIELDS, deliver_due, retry_delay
from tests.e2e.stack import Receiver
from tests.utils import add_ready_model, new_key
from worker.webhooks import DeliveryLoop


@pytest.fixture
def allow_private(monkeypatch):
    monkeypatch.setenv("LETHE_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def receiver(allow_private) -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as c:
        yield c


def _subscribe(client, url: str, events: list[str]) -> dict:
    r = client.post("/webhooks", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()


def _job(parent_id: str | None = None) -> str:
    """A queued job of the tenant "local" (the lifecycle functions move it; no worker needed)."""
    with session_scope() as session:
        model = add_ready_model(session, f"m-{utcnow().timestamp()}")
        return jobs.create_job(
            session, "unlearn", tenant_id="local", params={}, model_id=model.id, parent_id=parent_id
        ).id


def _succeed(job_id: str) -> None:
    with session_scope() as session:
        assert jobs.claim(session, job_id) is not None
    with session_scope() as session:
        assert jobs.succeed(session, job_id, result={"model_id": "x"}, metrics={"retain_accuracy": 0.9})


def _deliveries(client, hook_id: str) -> list[dict]:
    r = client.get(f"/webhooks/{hook_id}/deliveries")
    assert r.status_code == 200
    return r.json()["data"]


def _make_due(hook_id: str) -> None:
    """What the passing of the backoff time does: the pending deliveries become due now."""
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == hook_id, WebhookDelivery.status == "pending")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def test_subscribe_answers_the_secret_once_and_lists_without_it(client, allow_private):
    hook = _subscribe(client, "http://127.0.0.1:9/hook", ["job.succeeded", "job.failed"])
    assert set(hook) == {"id", "url", "events", "secret", "created_at"}
    assert hook["url"] == "http://127.0.0.1:9/hook" and hook["events"] == ["job.succeeded", "job.failed"]
    assert len(hook["secret"]) == 64
    listed = client.get("/webhooks").json()
    assert listed["count"] == 1 and "secret" not in listed["data"][0]
    assert "secret" not in client.get(f"/webhooks/{hook['id']}").json()
    default = client.post("/webhooks", json={"url": "http://127.0.0.1:9/other"}).json()
    assert default["events"] == ["job.succeeded", "job.failed", "job.cancelled"]
    other = {"X-API-Key": new_key("other")}
    assert client.get(f"/webhooks/{hook['id']}", headers=other).status_code == 404
    assert client.get(f"/webhooks/{hook['id']}/deliveries", headers=other).status_code == 404
    assert client.delete(f"/webhooks/{hook['id']}").status_code == 204
    assert client.get(f"/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://example.com/hook", "should match pattern"),  # the schema refuses it before any lookup
        ("http:///nohost", "names no host"),
        ("http://127.0.0.1:8000/hook", "resolves to 127.0.0.1"),
        ("http://localhost/hook", "loopback, link-local, private"),
        ("http://10.1.2.3/hook", "resolves to 10.1.2.3"),
        ("http://192.168.0.10/hook", "resolves to 192.168.0.10"),
        ("http://169.254.169.254/latest", "resolves to 169.254.169.254"),
        ("http://[::1]:8000/hook", "resolves to ::1"),
        ("http://[::ffff:127.0.0.1]/hook", "resolves to ::ffff:7f00:1"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_targets_that_are_not_public_http_are_refused(client, url, needle):
    r = client.post("/webhooks", json={"url": url, "events": ["job.succeeded"]})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "url"] and needle in detail["msg"]


def test_unknown_events_and_fields_are_422(client, allow_private):
    broken = client.post("/webhooks", content=b'{"url": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["detail"][0]["loc"] == ["body"]
    schema = client.get("/openapi.json").json()["paths"]["/webhooks"]["post"]["requestBody"]
    assert schema["content"]["application/json"]["schema"]["properties"]["url"]["pattern"].startswith("^[Hh]")
    r = client.post("/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["job.exploded"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "events"]
    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/", "events": []}).status_code == 422
    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/", "secret": "mine"}).status_code == 422


def test_subscribed_events_are_posted_signed_and_recorded(client, receiver, http):
    hook = _subscribe(client, receiver.url, ["job.started", "job.succeeded"])
    job_id = _job()
    _succeed(job_id)
    _job(parent_id=job_id)  # a fan-out run: never sent
    assert [d["status"] for d in _deliveries(client, hook["id"])] == ["pending", "pending"]

    assert deliver_due(http) == 2
    assert deliver_due(http) == 0
    events = []
    for headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-lethe-signature"] == expected
        assert headers["content-type"] == "application/json"
        payload = json.loads(body)
        assert set(payload) == {"event", "job"} and headers["x-lethe-event"] == payload["event"]
        assert payload["job"]["id"] == job_id
        events.append((payload["event"], payload["job"]["status"]))
    assert events == [("job.started", "running"), ("job.succeeded", "succeeded")]
    final = json.loads(receiver.requests[1][1])["job"]
    assert final["result"] == {"model_id": "x"} and final["progress"] == 1.0
    assert final == client.get(f"/jobs/{job_id}").json() | {"updated_at": final["updated_at"]}

    deliveries = _deliveries(client, hook["id"])
    assert {d["event"] for d in deliveries} == {"job.started", "job.succeeded"}
    for d in deliveries:
        assert d["status"] == "delivered" and d["attempts"] == 1 and d["response_status"] == 200
        assert d["delivered_at"] and d["error"] is None and len(d["log"]) == 1
        assert d["id"] in {h["x-lethe-delivery"] for h, _ in receiver.requests}
    assert {d["body"].encode() for d in deliveries} == {b for _, b in receiver.requests}


def test_the_webhook_job_is_the_job_the_api_shows():
    assert set(JOB_FIELDS) == set(JobPublic.model_fields)


def test_failures_are_retried_with_growing_waits_then_delivered(client, receiver, http):
    receiver.statuses = [500, 302]
    hook = _subscribe(client, receiver.url, ["job.succeeded"])
    _succeed(_job())
    assert deliver_due(http) == 1
    [first] = _deliveries(client, hook["id"])
    assert first["status"] == "pending" and first["attempts"] == 1 and first["error"] == "answered 500"
    assert deliver_due(http) == 0  # not due until the backoff has passed
    _make_due(hook["id"])
    assert deliver_due(http) == 1  # a redirect is not followed: it could lead anywhere
    [second] = _deliveries(client, hook["id"])
    assert second["attempts"] == 2 and second["response_status"] == 302 and second["status"] == "pending"
    assert len(receiver.requests) == 2
    _make_due(hook["id"])
    assert deliver_due(http) == 1
    [done] = _deliveries(client, hook["id"])
    assert done["status"] == "delivered" and done["attempts"] == 3 and done["next_attempt_at"] is None
    assert [entry["status"] for entry in done["log"]] == [500, 302, 200]
    assert len({body for _, body in receiver.requests}) == 1  # every retry sends the same signed body


def test_the_backoff_triples_and_is_capped():
    base = get_settings().webhook_retry_seconds
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3)] == [base, 3 * base, 9 * base]
    assert retry_delay(30) == timedelta(hours=6)


def test_a_retry_is_scheduled_one_backoff_after_the_failed_attempt(client, receiver, http):
    receiver.statuses = [503]
    hook = _subscribe(client, receiver.url, ["job.succeeded"])
    _succeed(_job())
    before = utcnow()
    deliver_due(http)
    after = utcnow()
    with session_scope() as session:
        due = session.execute(
            select(WebhookDelivery.next_attempt_at).where(WebhookDelivery.webhook_id == hook["id"])
        ).scalar_one()
    assert before + retry_delay(1) <= due <= after + retry_delay(1)


def test_a_delivery_fails_for_good_after_max_attempts(client, receiver, http, monkeypatch):
    monkeypatch.setenv("LETHE_WEBHOOK_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    receiver.statuses = [500, 500, 500]
    hook = _subscribe(client, receiver.url, ["job.succeeded"])
    _succeed(_job())
    deliver_due(http)
    _make_due(hook["id"])
    deliver_due(http)
    _make_due(hook["id"])
    assert deliver_due(http) == 0
    [d] = _deliveries(client, hook["id"])
    assert d["status"] == "failed" and d["attempts"] == 2 and d["next_attempt_at"] is None
    assert client.get(f"/webhooks/{hook['id']}/deliveries?status=failed").json()["count"] == 1
    assert client.get(f"/webhooks/{hook['id']}/deliveries?status=delivered").json()["count"] == 0


def test_an_unreachable_receiver_never_holds_up_the_job(client, allow_private, http):
    dead = Receiver()
    dead.close()
    hook = _subscribe(client, dead.url, ["job.succeeded", "job.failed"])
    job_id = _job()
    with session_scope() as session:
        jobs.claim(session, job_id)
    with session_scope() as session:
        assert jobs.finish_unsuccessfully(session, job_id, JobStatus.failed, "out of memory")
    assert client.get(f"/jobs/{job_id}").json()["status"] == "failed"
    deliver_due(http)
    [d] = _deliveries(client, hook["id"])
    assert d["event"] == "job.failed" and d["status"] == "pending" and "ConnectError" in d["error"]
    assert json.loads(d["body"])["job"]["error"] == "out of memory"


def test_a_target_that_turned_private_is_refused_when_sending(client, receiver, http, monkeypatch):
    hook = _subscribe(client, receiver.url, ["job.succeeded"])
    monkeypatch.setenv("LETHE_WEBHOOK_ALLOW_PRIVATE", "false")
    get_settings.cache_clear()
    _succeed(_job())
    deliver_due(http)
    [d] = _deliveries(client, hook["id"])
    assert d["status"] == "pending" and d["error"].startswith(
        "refused: host '127.0.0.1' resolves to 127.0.0.1"
    )
    assert receiver.requests == []


def test_a_webhook_deleted_while_its_delivery_is_under_way_ends_it_quietly(client, receiver, http):
    hook = _subscribe(client, receiver.url, ["job.succeeded"])
    _succeed(_job())
    receiver.on_post = lambda: client.delete(f"/webhooks/{hook['id']}")
    assert deliver_due(http) == 1  # the answer is recorded nowhere, and nothing raises
    assert len(receiver.requests) == 1 and client.get("/webhooks").json()["count"] == 0
    with session_scope() as session:
        assert session.execute(select(WebhookDelivery.id)).first() is None


def test_the_worker_loop_sends_deliveries(client, receiver):
    _subscribe(client, receiver.url, ["job.cancelled"])
    job_id = _job()
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    loop = DeliveryLoop(idle_seconds=0.05)
    loop.start()
    try:
        assert receiver.got.wait(60), "the delivery loop sent nothing"
    finally:
        loop.stop()
    [(_, body)] = receiver.requests
    assert json.loads(body)["event"] == "job.cancelled"


def test_every_202_says_where_the_job_is_and_when_to_look(client):
    with session_scope() as session:
        add_ready_model(session, "m202")
    body = {"model_id": "m202", "forget_ids": [1, 2], "method": "none"}
    r = client.post("/unlearn", json=body, headers={"Idempotency-Key": "k-202"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['job_id']}"
    assert int(r.headers["retry-after"]) >= 1
    replay = client.post("/unlearn", json=body, headers={"Idempotency-Key": "k-202"})
    assert replay.headers["location"] == r.headers["location"] and "retry-after" in replay.headers
    assert client.get(r.headers["location"]).json()["status"] == "queued"
    train = client.post("/models", json={"dataset": "digits", "name": "t202", "recipe": {"epochs": 1}})
    assert train.status_code == 202 and train.headers["location"] == f"/jobs/{train.json()['job_id']}"
    evaluation = client.post("/evaluations", json={**body, "n_models": 2})
    assert evaluation.status_code == 202
    assert evaluation.headers["location"] == f"/jobs/{evaluation.json()['job_id']}"


def test_the_worker_loop_waits_longer_while_the_database_is_down(monkeypatch):
    """Each failed pass doubles the wait (up to a minute); a good pass goes back to the idle wait."""
    results = iter([RuntimeError("no database"), RuntimeError("no database"), 0, RuntimeError("again")])
    waits: list[float] = []
    loop = DeliveryLoop(idle_seconds=1.0)

    def fake_deliver(_http):
        outcome = next(results)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def fake_wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 4:
            loop._stop.set()
        return loop._stop.is_set()

    monkeypatch.setattr("worker.webhooks.deliver_due", fake_deliver)
    monkeypatch.setattr(loop._stop, "wait", fake_wait)
    loop._run()
    assert waits == [2.0, 4.0, 1.0, 2.0]


@pytest.mark.parametrize(("sender", "loops_started"), [("true", 1), ("false", 0)])
def test_a_worker_sends_deliveries_unless_told_to_leave_them_to_others(monkeypatch, sender, loops_started):
    from worker import app as worker_app

    started: list[bool] = []
    monkeypatch.setattr(worker_app._deliveries, "start", lambda: started.append(True))
    monkeypatch.setenv("LETHE_WEBHOOK_SENDER", sender)
    get_settings.cache_clear()
    try:
        worker_app._start_deliveries()
    finally:
        monkeypatch.delenv("LETHE_WEBHOOK_SENDER")
        get_settings.cache_clear()
    assert len(started) == loops_started


@pytest.mark.slow
def test_the_shared_test_worker_leaves_deliveries_to_the_test_that_sends_them(client, receiver, http):
    """The suite's worker lives across tests on one database; its delivery loop (a pass a second) took the
    deliveries tests send themselves, and those tests failed under load: it must leave them alone."""
    from tests.broker import consuming

    with consuming():
        hook = _subscribe(client, receiver.url, ["job.started", "job.succeeded"])
        _succeed(_job())
        time.sleep(3)  # three of the loop's passes
        assert [d["status"] for d in _deliveries(client, hook["id"])] == ["pending", "pending"]
        assert deliver_due(http) == 2 and len(receiver.requests) == 2
