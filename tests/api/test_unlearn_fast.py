"""POST /unlearn's one-statement path on Postgres (core.unlearn_fast): the same rows and answers as the usual
way, in one statement, and every refusal answered exactly as the usual way answers it."""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
import pytest
from sqlalchemy import event, func, select, update

from core import services, unlearn_fast
from core.db import get_engine, session_scope
from core.jobmetrics import QUEUED
from core.settings import get_settings
from core.tables import AuditEvent, ForgetRequest, Job, Model, ModelStatus, Webhook, WebhookDelivery
from tests.utils import add_ready_model

BODY = {
    "model_id": "m1",
    "forget_ids": [9, 2, 5],
    "method": "finetune",
    "params": {"epochs": 2},
    "seed": 7,
    "requested_by": "dpo",
}


@pytest.fixture
def model(client) -> str:
    with session_scope() as session:
        model_id = add_ready_model(session, "m1").id
        # A webhook for the queued event, one for other events only: the first gets a delivery.
        session.add(
            Webhook(tenant_id="local", url="http://hooks.invalid/q", events=["job.queued"], secret="s")
        )
        session.add(
            Webhook(tenant_id="local", url="http://hooks.invalid/f", events=["job.failed"], secret="s")
        )
    return model_id


@pytest.fixture
def usual_way(monkeypatch):
    """Call it to turn the fast path off (every request then goes the usual way); it returns an undo."""

    def off():
        original = unlearn_fast.create_unlearn_async

        async def none(*args, **kwargs):
            return None

        monkeypatch.setattr(unlearn_fast, "create_unlearn_async", none)
        return lambda: monkeypatch.setattr(unlearn_fast, "create_unlearn_async", original)

    return off


@pytest.fixture
def no_session(monkeypatch):
    """Fail the test if a request goes the usual way."""
    monkeypatch.setattr(services, "create_unlearn", lambda *a, **k: pytest.fail("went the usual way"))


@pytest.fixture
def fast_statements(monkeypatch) -> list[str]:
    """Every statement sent through an async psycopg connection (the fast path's pool)."""
    seen: list[str] = []
    original = psycopg.AsyncConnection.execute

    async def spy(self, query, params=None, **kwargs):
        seen.append(query if isinstance(query, str) else str(query))
        return await original(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", spy)
    return seen


def _rows(job_id: str) -> dict:
    """The rows one POST /unlearn wrote, ids and times left out (they differ between any two requests)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        request = session.get(ForgetRequest, job.forget_request_id)
        events = session.execute(
            select(AuditEvent).where(AuditEvent.object_id.in_([job.id, request.id])).order_by(AuditEvent.id)
        ).scalars()
        deliveries = session.execute(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)
        ).scalars()
        hooks = {h.id: h.url for h in session.execute(select(Webhook)).scalars()}
        ids = {job.id: "<job>", request.id: "<request>"}
        return {
            "job": {
                c: getattr(job, c)
                for c in (col.name for col in Job.__table__.columns)
                if c not in ("id", "created_at", "updated_at", "forget_request_id")
            },
            "job_times": job.created_at is not None and job.updated_at is not None,
            "request": {
                c: getattr(request, c)
                for c in (col.name for col in ForgetRequest.__table__.columns)
                if c not in ("id", "created_at")
            }
            | {"job_id": ids[request.job_id]},
            "events": [(e.tenant_id, e.object_type, ids[e.object_id], e.event, e.detail) for e in events],
            "deliveries": [
                (
                    hooks[d.webhook_id],
                    d.tenant_id,
                    d.event,
                    d.status,
                    d.attempts,
                    d.log,
                    d.response_status,
                    d.error,
                    d.delivered_at,
                    d.next_attempt_at is not None and d.created_at is not None,
                    len(d.id),
                    _body(d.body, ids),
                )
                for d in deliveries
            ],
        }


def _body(body: str, ids: dict[str, str]) -> dict:
    payload = json.loads(body)
    job = payload["job"]
    for key in ("created_at", "updated_at"):
        assert datetime.fromisoformat(job.pop(key)).utcoffset() is not None
    return payload | {"job": job | {"id": ids[job["id"]], "forget_request_id": ids[job["forget_request_id"]]}}


def _counts() -> tuple[int, ...]:
    with session_scope() as session:
        return tuple(
            session.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (Job, ForgetRequest, AuditEvent, WebhookDelivery)
        )


def test_the_fast_path_writes_what_the_usual_way_writes_in_one_statement(
    client, model, usual_way, monkeypatch, fast_statements
):
    undo = usual_way()
    slow = client.post("/unlearn", json=BODY)
    undo()
    monkeypatch.setattr(services, "create_unlearn", lambda *a, **k: pytest.fail("went the usual way"))
    sql: list[str] = []

    def record(*args) -> None:
        sql.append(args[2])

    event.listen(get_engine(), "before_cursor_execute", record)
    queued = QUEUED.labels("unlearn")._value.get()
    fast_statements.clear()
    try:
        fast = client.post("/unlearn", json=BODY)
        assert len(fast_statements) == 2  # the model's lookup, then everything in one statement
        again = client.post("/unlearn", json={**BODY, "forget_ids": [1]})
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert sql == []  # nothing through SQLAlchemy
    assert len(fast_statements) == 3  # the model is cached: one statement for the second request
    assert QUEUED.labels("unlearn")._value.get() == queued + 2
    assert slow.status_code == fast.status_code == again.status_code == 202
    for r in (slow, fast):
        assert set(r.json()) == {"job_id", "forget_request_id"}
        assert r.headers["location"] == f"/jobs/{r.json()['job_id']}"
        assert r.headers["retry-after"] == slow.headers["retry-after"]
    assert _rows(fast.json()["job_id"]) == _rows(slow.json()["job_id"])
    rows = _rows(fast.json()["job_id"])
    assert rows["job"]["status"] == "queued" and rows["job"]["params"]["seed"] == 7
    assert [e[3] for e in rows["events"]] == ["received", "queued"]
    assert [d[0] for d in rows["deliveries"]] == ["http://hooks.invalid/q"]
    # The delivery's job is the job as GET /jobs/{id} shows it.
    with session_scope() as session:
        body = session.execute(
            select(WebhookDelivery.body).where(WebhookDelivery.job_id == fast.json()["job_id"])
        ).scalar_one()
    shown = client.get(f"/jobs/{fast.json()['job_id']}").json()
    job = json.loads(body)["job"]
    assert job.keys() == shown.keys()
    for key in ("created_at", "updated_at"):
        assert datetime.fromisoformat(job.pop(key)) == datetime.fromisoformat(shown.pop(key))
    assert job == shown


def _answer(r) -> tuple:
    return r.status_code, r.json(), r.headers.get("retry-after")


@pytest.mark.parametrize(
    "change, status",
    [
        ({"model_id": "nope"}, 404),
        ({"forget_ids": [3, 3]}, 422),
        ({"forget_ids": [5000]}, 422),
        ({"method": "no-such-method"}, 422),
        ({"params": {"epochs": -1}}, 422),
        ({"forget_class": 3, "forget_ids": None}, 202),  # a class: the usual way takes it
        ({"name": "m1"}, 409),  # a model has that name
    ],
)
def test_refusals_are_answered_as_the_usual_way_answers_them(client, model, usual_way, change, status):
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    before = _counts()
    fast = client.post("/unlearn", json=body)
    if status == 202:
        assert fast.status_code == 202 and _counts()[:2] == (before[0] + 1, before[1] + 1)
        return
    assert _counts() == before
    usual_way()
    slow = client.post("/unlearn", json=body)
    assert _answer(fast) == _answer(slow) and fast.status_code == status
    assert _counts() == before


def test_a_cached_model_that_is_no_longer_ready_is_refused_then_taken_again(client, model, fast_statements):
    assert client.post("/unlearn", json=BODY).status_code == 202  # caches the model
    for status in (ModelStatus.training, ModelStatus.purged):
        with session_scope() as session:
            session.execute(update(Model).where(Model.id == model).values(status=status))
        before = _counts()
        refused = client.post("/unlearn", json=BODY)
        assert refused.status_code == 409 and str(status) in refused.json()["detail"]
        assert _counts() == before
    with session_scope() as session:
        session.execute(update(Model).where(Model.id == model).values(status=ModelStatus.ready))
    assert client.post("/unlearn", json=BODY).status_code == 202


def test_a_name_is_stored_and_a_taken_one_refused(client, model, no_session):
    named = client.post("/unlearn", json={**BODY, "name": "child-1"})
    assert named.status_code == 202
    with session_scope() as session:
        assert session.get(Job, named.json()["job_id"]).params["name"] == "child-1"
        add_ready_model(session, "child-2")
    # The name is free when the job is queued (the child is made when it ends); a model's name is not.
    assert client.post("/unlearn", json={**BODY, "name": "child-1"}).status_code == 202


def test_a_full_tenant_queue_is_429_and_a_freed_place_is_taken(client, model, usual_way, monkeypatch):
    monkeypatch.setenv("LETHE_TENANT_MAX_ACTIVE_JOBS", "2")
    monkeypatch.setenv("LETHE_TENANT_RETRY_AFTER_SECONDS", "17")
    get_settings.cache_clear()
    assert [client.post("/unlearn", json=BODY).status_code for _ in range(2)] == [202, 202]
    before = _counts()
    fast = client.post("/unlearn", json=BODY)
    assert fast.status_code == 429 and fast.headers["retry-after"] == "17" and _counts() == before
    undo = usual_way()
    assert _answer(client.post("/unlearn", json=BODY)) == _answer(fast)
    undo()
    with session_scope() as session:
        session.execute(update(Job).values(status="succeeded"))
    assert client.post("/unlearn", json=BODY).status_code == 202


def test_a_forget_set_that_may_leave_nothing_goes_the_usual_way(client, model, monkeypatch):
    """Whether the ids with those the model already forgot cover the data set is counted the usual way."""
    from core import idsets

    with session_scope() as session:
        n_train = session.execute(select(Model.dataset_id).where(Model.id == model)).scalar_one()
        from core.tables import Dataset

        n_train = session.get(Dataset, n_train).n_train
        session.execute(
            update(Model).where(Model.id == model).values(forgotten_ids=idsets.encode(range(1, n_train)))
        )
    refused = client.post("/unlearn", json={**BODY, "forget_ids": [0]})
    assert refused.status_code == 422 and "nothing would be left" in refused.json()["detail"][0]["msg"]


def test_the_fast_path_publishes_the_job_with_its_task_sent_event_for_flower(client, model):
    """The dispatcher's batches carry the task-sent event Flower shows tasks from, as send_task alone did."""
    import asyncio
    import threading

    from core.queue import DISPATCHER, get_celery

    r = client.post("/unlearn", json=BODY)
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    app = get_celery()
    seen = threading.Event()

    def on_sent(event: dict) -> None:
        if event.get("uuid") == job_id and event.get("queue", "").endswith(".forget"):
            seen.set()
            receiver.should_stop = True

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"task-sent": on_sent})
        listener = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": 60}, daemon=True
        )
        listener.start()
        for _ in range(60):  # events are fire-and-forget: publish again until the listener is subscribed
            asyncio.run(DISPATCHER.publish_async(job_id, unlearn_fast.KIND))
            if seen.wait(0.5):
                break
        receiver.should_stop = True
        listener.join(10)
    assert seen.is_set()
