"""POST /unlearn and friends against real Postgres and Redis: validation, records, status codes."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from core import idsets
from core.db import session_scope
from core.tables import AuditEvent, ForgetRequest, Job
from ml.methods.params import METHOD_SPECS, AutoParams, FinetuneParams
from tests.utils import add_ready_model


@pytest.fixture
def model(client):
    with session_scope() as session:
        return add_ready_model(session, "m1").id


def _counts() -> tuple[int, int]:
    with session_scope() as session:
        jobs = session.execute(select(func.count()).select_from(Job)).scalar_one()
        requests = session.execute(select(func.count()).select_from(ForgetRequest)).scalar_one()
    return jobs, requests


def test_health_reports_both_parts(client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_health_names_the_broker_when_it_is_down(client, monkeypatch):
    from core.queue import get_celery

    monkeypatch.setenv("LETHE_BROKER_URL", "redis://127.0.0.1:1/0")
    from core.settings import get_settings

    get_settings.cache_clear()
    get_celery.cache_clear()
    r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["broker"] == "down" and r.json()["database"] == "ok"


def test_unlearn_records_request_and_job_before_answering(client, model):
    ids = [5, 1, 9]
    r = client.post("/unlearn", json={"model_id": "m1", "forget_ids": ids, "method": "finetune"})
    assert r.status_code == 202, r.text
    body = r.json()
    with session_scope() as session:
        req = session.get(ForgetRequest, body["forget_request_id"])
        job = session.get(Job, body["job_id"])
        assert req.n_ids == 3 and idsets.decode(req.ids).tolist() == [1, 5, 9]
        assert req.ids_sha256 == idsets.sha256([1, 5, 9])
        assert req.params == FinetuneParams().model_dump(mode="json")  # defaults filled in and stored
        assert req.params["epochs"] == 5 and req.params["lr"] == 0.001
        assert job.status == "queued" and job.kind == "unlearn" and job.forget_request_id == req.id
        events = (
            session.execute(select(AuditEvent.event).where(AuditEvent.object_id == req.id)).scalars().all()
        )
        assert events == ["received"]
    r = client.get(f"/jobs/{body['job_id']}")
    assert r.status_code == 200
    assert r.json()["status"] == "queued" and r.json()["progress"] == 0.0
    assert client.get(f"/jobs/{body['job_id']}/metrics").status_code == 404


def test_model_id_and_name_both_work(client, model):
    assert client.get("/models/m1").json()["id"] == model
    assert client.get(f"/models/{model}").json()["name"] == "m1"
    r = client.post("/unlearn", json={"model_id": model, "forget_ids": [0], "method": "finetune"})
    assert r.status_code == 202


@pytest.mark.parametrize(
    ("ids", "needle"),
    [
        ([], "at least 1 item"),
        ([3, 3], "duplicates: 3"),
        ([-1], "greater than or equal to 0"),
        ([2**63], "less than or equal to 2147483647"),
        ([1438], "out of range [0, 1438)"),
        (["7"], "valid integer"),
        ([1.5], "valid integer"),
    ],
)
def test_bad_forget_ids_are_rejected_and_nothing_is_stored(client, model, ids, needle):
    before = _counts()
    r = client.post("/unlearn", json={"model_id": "m1", "forget_ids": ids, "method": "finetune"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any("forget_ids" in d["loc"] for d in detail), detail
    assert any(needle in d["msg"] for d in detail), detail
    assert _counts() == before


def test_unknown_method_lists_the_valid_names(client, model):
    r = client.post("/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "forgetify"})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "method"] and "finetune" in detail["msg"] and "retrain" in detail["msg"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"epochs": "many"}, "epochs"), ({"lr": -1}, "lr"), ({"colour": "red"}, "colour")],
)
def test_bad_params_name_the_field(client, model, params, field):
    before = _counts()
    r = client.post(
        "/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "finetune", "params": params}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "params", field]
    assert _counts() == before


def test_unknown_model_is_404(client):
    r = client.post("/unlearn", json={"model_id": "nope", "forget_ids": [1], "method": "finetune"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.get("/models/nope").status_code == 404
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000/metrics").status_code == 404


def test_methods_lists_schemas(client):
    methods = {m["name"]: m for m in client.get("/methods").json()}
    assert {"finetune", "retrain", "none"} <= set(methods)
    props = methods["finetune"]["params_schema"]["properties"]
    assert props["epochs"]["default"] == 5 and props["lr"]["default"] == 0.001


def test_methods_lists_auto_with_its_params_after_the_registered_ones(client):
    listed = client.get("/methods").json()
    assert [m["name"] for m in listed] == [*METHOD_SPECS, "auto"]
    auto = listed[-1]
    assert "chooses" in auto["description"] and "evaluations and studies refuse it" in auto["description"]
    props = auto["params_schema"]["properties"]
    assert {k: p["default"] for k, p in props.items()} == AutoParams().model_dump()
    assert props["budget"]["default"] == 0.1 and props["accuracy_tolerance"]["default"] == 0.01
    assert all(p.get("description") for p in props.values())
    assert props["budget"]["exclusiveMinimum"] == 0 and props["budget"]["maximum"] == 1


def test_create_model_validates_and_queues(client):
    from core.bootstrap import ensure_digits

    with session_scope() as session:
        ensure_digits(session)
    r = client.post(
        "/models", json={"name": "tiny", "dataset": "digits", "arch": {"width": 4}, "recipe": {"epochs": 2}}
    )
    assert r.status_code == 202, r.text
    m = client.get("/models/tiny").json()
    assert m["status"] == "training" and m["recipe"]["epochs"] == 2 and m["arch"]["width"] == 4
    assert client.get(f"/jobs/{r.json()['job_id']}").json()["kind"] == "train"
    assert client.post("/models", json={"name": "tiny", "dataset": "digits"}).status_code == 409
    bad = client.post("/models", json={"dataset": "digits", "arch": {"width": "wide"}})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "arch", "width"]
    bad = client.post("/models", json={"dataset": "digits", "recipe": {"epochs": 10, "milestones": [20]}})
    assert bad.status_code == 422 and "milestones" in bad.json()["detail"][0]["msg"]
    assert client.post("/models", json={"dataset": "cifar99"}).status_code == 404


def test_unlearn_refuses_a_model_that_is_not_ready(client):
    from core.bootstrap import ensure_digits

    with session_scope() as session:
        ensure_digits(session)
    client.post("/models", json={"name": "busy", "dataset": "digits"})
    r = client.post("/unlearn", json={"model_id": "busy", "forget_ids": [1], "method": "finetune"})
    assert r.status_code == 409 and "training" in r.json()["detail"]


def test_idsets_roundtrip_is_compact():
    ids = np.random.default_rng(0).choice(50_000, 1000, replace=False)
    blob = idsets.encode(ids)
    assert idsets.decode(blob).tolist() == sorted(ids.tolist())
    assert len(blob) < 2200


def test_jobs_list_filters_by_status_and_kind(client, model):
    for ids in ([1], [2], [3]):
        client.post("/unlearn", json={"model_id": "m1", "forget_ids": ids, "method": "none"})
    listed = client.get("/jobs").json()
    assert listed["count"] == 3 and [j["kind"] for j in listed["data"]] == ["unlearn"] * 3
    assert listed["next_cursor"] is None
    first = listed["data"][-1]["id"]
    client.post(f"/jobs/{first}/cancel")
    assert client.get("/jobs", params={"status": "cancelled"}).json()["data"][0]["id"] == first
    first_page = client.get("/jobs", params={"status": "queued", "limit": 1}).json()
    assert first_page["data"] == [client.get(f"/jobs/{listed['data'][0]['id']}").json()]
    assert first_page["count"] == 2 and first_page["next_cursor"]
    assert client.get("/jobs", params={"kind": "train"}).json() == {
        "data": [],
        "count": 0,
        "next_cursor": None,
    }
    assert client.get("/jobs", params={"status": "sleeping"}).status_code == 422


def test_forget_a_whole_class(client, model):
    from sqlalchemy import select

    from ml.data import load_dataset

    labels = load_dataset("digits").train_y
    r = client.post("/unlearn", json={"model_id": "m1", "forget_class": 3, "method": "none"})
    assert r.status_code == 202, r.text
    with session_scope() as session:
        req = session.get(ForgetRequest, r.json()["forget_request_id"])
        assert idsets.decode(req.ids).tolist() == np.flatnonzero(labels == 3).tolist()
        detail = session.execute(
            select(AuditEvent.detail).where(AuditEvent.object_id == req.id, AuditEvent.event == "received")
        ).scalar_one()
    assert detail["forget_class"] == 3 and detail["n_ids"] == int((labels == 3).sum())
    both = client.post(
        "/unlearn", json={"model_id": "m1", "forget_class": 3, "forget_ids": [1], "method": "none"}
    )
    assert both.status_code == 422 and both.json()["detail"][0]["loc"] == ["body", "forget_class"]
    neither = client.post("/unlearn", json={"model_id": "m1", "method": "none"})
    assert neither.status_code == 422 and "forget_class" in neither.json()["detail"][0]["msg"]
    assert (
        client.post("/unlearn", json={"model_id": "m1", "forget_class": 10, "method": "none"}).status_code
        == 422
    )
    ev = client.post(
        "/evaluations", json={"model_id": "m1", "forget_class": 0, "method": "none", "n_models": 1}
    )
    assert ev.status_code == 202


def test_unlearn_writes_in_one_flush_and_publishes_without_reading_the_job(client, model, monkeypatch):
    """The usual way (here forced: the Postgres fast path is tested in test_unlearn_fast.py): the job's
    `queued` event goes out with the other rows; neither the job metrics nor the publish read the job back
    (its kind is known), and a tenant without webhooks gets one lookup, no deliveries."""
    from sqlalchemy import event

    from core import unlearn_fast
    from core.db import get_engine
    from core.jobmetrics import QUEUED

    async def usual_way(*args, **kwargs):
        return None

    monkeypatch.setattr(unlearn_fast, "create_unlearn_async", usual_way)

    statements: list[str] = []

    def record(*args) -> None:
        statements.append(" ".join(args[2].split()))

    queued_before = QUEUED.labels("unlearn")._value.get()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        r = client.post("/unlearn", json={"model_id": model, "forget_ids": [1, 2], "method": "none"})
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert len([s for s in statements if s.startswith("INSERT INTO audit_events")]) == 1
    assert [s for s in statements if "FROM jobs WHERE jobs.id" in s] == []
    assert len([s for s in statements if "FROM webhooks" in s]) == 1
    assert QUEUED.labels("unlearn")._value.get() == queued_before + 1
    with session_scope() as session:
        events = session.execute(
            select(AuditEvent.object_type, AuditEvent.event).order_by(AuditEvent.id)
        ).all()
        assert [tuple(e) for e in events][-2:] == [("forget_request", "received"), ("job", "queued")]
        assert session.get(Job, job_id).kind == "unlearn"
