"""POST /forget-requests and forget policies on real Postgres and Redis: stored, idempotent, no job, paged."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import func, select

from core import idsets
from core.artifacts import get_store
from core.db import session_scope
from core.services import labels_key
from core.tables import AuditEvent, ForgetRequest, Job, Model
from tests.utils import add_ready_model, new_key

pytestmark = pytest.mark.usefixtures("no_background_sweep")


@pytest.fixture
def model(client) -> str:
    with session_scope() as session:
        return add_ready_model(session, "m1").id


def _count(table: type) -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


def test_intake_stores_the_request_and_its_audit_event_and_starts_no_job(client, model):
    r = client.post(
        "/forget-requests",
        json={"model_id": "m1", "forget_ids": [9, 2, 5], "requested_by": "dpo", "external_ref": "t-1"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending"
    request_id = r.json()["forget_request_id"]
    assert _count(Job) == 0
    with session_scope() as session:
        req = session.get(ForgetRequest, request_id)
        assert (req.status, req.model_id, req.external_ref, req.requested_by) == (
            "pending",
            model,
            "t-1",
            "dpo",
        )
        assert idsets.decode(req.ids).tolist() == [2, 5, 9] and req.ids_sha256 == idsets.sha256([2, 5, 9])
        assert req.job_id is None and req.method is None
        events = session.execute(select(AuditEvent).where(AuditEvent.object_id == request_id)).scalars().all()
        assert [e.event for e in events] == ["received"] and events[0].detail["external_ref"] == "t-1"
    got = client.get(f"/forget-requests/{request_id}").json()
    assert got["status"] == "pending" and got["external_ref"] == "t-1" and got["batch"] is None
    assert got["job_id"] is None and got["result_model_id"] is None and got["n_ids"] == 3


def test_a_whole_class_can_be_requested(client, model):
    r = client.post("/forget-requests", json={"model_id": "m1", "forget_class": 3})
    assert r.status_code == 202, r.text
    with session_scope() as session:
        req = session.get(ForgetRequest, r.json()["forget_request_id"])
        model_row = session.get(Model, model)
        labels = get_store().read_array(labels_key(model_row.dataset_id))
    assert idsets.decode(req.ids).tolist() == np.flatnonzero(labels == 3).tolist() and req.n_ids > 100


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model_id": "nope", "forget_ids": [1]}, 404, "model 'nope' not found"),
        ({"model_id": "m1", "forget_ids": []}, 422, "forget_ids is empty"),
        ({"model_id": "m1", "forget_ids": [1, 1]}, 422, "duplicates"),
        ({"model_id": "m1", "forget_ids": [10**6]}, 422, "out of range"),
        ({"model_id": "m1", "forget_ids": [2**70]}, 422, "less than or equal to 2147483647"),
        ({"model_id": "m1"}, 422, "give forget_ids, or forget_class"),
        ({"model_id": "m1", "forget_ids": [1], "forget_class": 1}, 422, "not both"),
        ({"model_id": "m1", "forget_ids": [1], "method": "finetune"}, 422, "Extra inputs"),
        ({"model_id": "m1", "forget_ids": [1], "external_ref": ""}, 422, "at least 1 character"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_stored(client, model, body, status, fragment):
    r = client.post("/forget-requests", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.text
    assert _count(ForgetRequest) == 0


def test_the_same_external_ref_returns_the_same_request_and_another_body_under_it_is_a_conflict(
    client, model
):
    body = {"model_id": "m1", "forget_ids": [4, 7], "external_ref": "gdpr-77"}
    first = client.post("/forget-requests", json=body)
    again = client.post("/forget-requests", json={**body, "forget_ids": [7, 4]})  # the same set of ids
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    other = client.post("/forget-requests", json={**body, "forget_ids": [4, 8]})
    assert other.status_code == 409 and "gdpr-77" in other.json()["detail"]
    assert _count(ForgetRequest) == 1
    # Another tenant's references are its own.
    with session_scope() as session:
        add_ready_model(session, "m2").tenant_id = "other"
    theirs = client.post(
        "/forget-requests",
        json={**body, "model_id": "m2", "forget_ids": [4, 8]},
        headers={"X-API-Key": new_key("other")},
    )
    assert (
        theirs.status_code == 202 and theirs.json()["forget_request_id"] != first.json()["forget_request_id"]
    )


def test_the_same_idempotency_key_replays_and_another_body_under_it_is_a_conflict(client, model):
    body = {"model_id": "m1", "forget_ids": [1, 2]}
    key = {"Idempotency-Key": "k-1"}
    first = client.post("/forget-requests", json=body, headers=key)
    again = client.post("/forget-requests", json=body, headers=key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert client.post("/forget-requests", json={**body, "forget_ids": [3]}, headers=key).status_code == 409
    assert _count(ForgetRequest) == 1 and _count(Job) == 0


def test_the_list_pages_by_cursor_and_filters_by_status_and_model(client, model):
    with session_scope() as session:
        add_ready_model(session, "m2")
    made = [
        client.post("/forget-requests", json={"model_id": "m1", "forget_ids": [i]}).json() for i in range(5)
    ]
    client.post("/forget-requests", json={"model_id": "m2", "forget_ids": [1]})
    seen, cursor = [], None
    while True:
        params = {"model_id": "m1", "status": "pending", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/forget-requests", params=params).json()
        assert page["count"] == 5 and len(page["data"]) <= 2
        seen += [row["id"] for row in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [m["forget_request_id"] for m in made]  # oldest first, each once
    assert client.get("/forget-requests").json()["count"] == 6
    assert client.get("/forget-requests", params={"status": "fulfilled"}).json() == {
        "data": [],
        "count": 0,
        "next_cursor": None,
    }
    assert client.get("/forget-requests", params={"status": "lost"}).status_code == 422
    for cursor in ("not-a-cursor", "0" * 40, "é"):
        bad = client.get("/forget-requests", params={"cursor": cursor})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"], bad.text
    assert datetime.fromisoformat(page["data"][0]["created_at"]).utcoffset() is not None
    assert client.get("/forget-requests", params={"model_id": "nope"}).status_code == 404
    other = {"X-API-Key": new_key("other")}
    assert client.get("/forget-requests", headers=other).json()["count"] == 0
    assert client.get(f"/forget-requests/{made[0]['forget_request_id']}", headers=other).status_code == 404


def test_a_policy_is_validated_stored_and_read_back(client, model):
    assert client.get("/models/m1/forget-policy").status_code == 404
    bad = client.put("/models/m1/forget-policy", json={"method": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "method"]  # by the schema
    bad = client.put("/models/m1/forget-policy", json={"method": "finetune", "params": {"lr": -1}})
    assert bad.status_code == 422 and "params.lr" in bad.text
    assert (
        client.put("/models/m1/forget-policy", json={"method": "none", "window_seconds": -1}).status_code
        == 422
    )
    assert client.put("/models/nope/forget-policy", json={"method": "none"}).status_code == 404
    too_many = {"method": "none", "max_requests": 2**40}  # more than the database's integer holds
    assert client.put("/models/m1/forget-policy", json=too_many).status_code == 422
    for loose in ({"max_requests": "3"}, {"evaluate": 1}, {"window_seconds": "5"}, {"extra": 1}):
        bad = client.put("/models/m1/forget-policy", json={"method": "none", **loose})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][0] == "body", (loose, bad.text)
    schema = client.get("/openapi.json").json()["paths"]["/models/{model_id}/forget-policy"]["put"]
    assert (
        "finetune"
        in schema["requestBody"]["content"]["application/json"]["schema"]["properties"]["method"]["enum"]
    )
    client.post("/forget-requests", json={"model_id": "m1", "forget_ids": [1]})
    r = client.put(
        "/models/m1/forget-policy",
        json={"method": "finetune", "params": {"epochs": 1}, "window_seconds": 30, "max_requests": 100},
    )
    assert r.status_code == 200, r.text
    policy = client.get(f"/models/{model}/forget-policy").json()
    assert (
        policy["method"] == "finetune" and policy["params"]["epochs"] == 1 and policy["params"]["lr"] == 0.001
    )
    assert (policy["window_seconds"], policy["max_requests"], policy["max_samples"]) == (30, 100, None)
    assert policy["pending"] == 1 and policy["running_job_id"] is None and policy["head_model_id"] is None
    assert datetime.fromisoformat(policy["updated_at"]).utcoffset() is not None
    replaced = client.put("/models/m1/forget-policy", json={"method": "none", "window_seconds": 5}).json()
    assert replaced["method"] == "none" and replaced["max_requests"] is None
    assert client.get("/models/m1/forget-policy", headers={"X-API-Key": new_key("other")}).status_code == 404
    assert _count(Job) == 0


def test_a_concurrent_first_send_of_the_same_external_ref_answers_with_the_stored_request(
    client, model, monkeypatch
):
    """Two sends that both looked before either stored: the unique index stops the second, which answers the first."""
    from core import intake

    body = {"model_id": "m1", "forget_ids": [4, 7], "external_ref": "race-1"}
    first = client.post("/forget-requests", json=body).json()["forget_request_id"]
    lookup = intake._by_external_ref
    missed: list[str] = []

    def miss_once(session, tenant_id, external_ref):
        if not missed:  # this send looked before the first one had committed
            missed.append(external_ref)
            return None
        return lookup(session, tenant_id, external_ref)

    monkeypatch.setattr(intake, "_by_external_ref", miss_once)
    again = client.post("/forget-requests", json=body)
    assert missed == ["race-1"] and again.status_code == 200 and again.json()["forget_request_id"] == first
    missed.clear()
    other = client.post("/forget-requests", json={**body, "forget_ids": [5]})
    assert other.status_code == 409 and missed == ["race-1"]
    assert _count(ForgetRequest) == 1


def test_on_postgres_a_plain_request_is_stored_in_one_statement_exactly_as_the_session_stores_it(
    client, model, monkeypatch
):
    from core import intake

    by_session = client.post(
        "/forget-requests", json={"model_id": "m1", "forget_ids": [1]}, headers={"Idempotency-Key": "k"}
    )
    assert by_session.status_code == 202
    sessions = []
    monkeypatch.setattr(
        intake, "take_in", lambda *a, **k: sessions.append(k) or pytest.fail("went the usual way")
    )
    body = {"model_id": "m1", "forget_ids": [9, 2, 5], "requested_by": "dpo", "external_ref": "fast-1"}
    fast = client.post("/forget-requests", json=body)
    assert fast.status_code == 202 and fast.json()["status"] == "pending" and sessions == []
    with session_scope() as session:
        rows = {r.id: r for r in session.execute(select(ForgetRequest)).scalars()}
        events = {
            e.object_id: e
            for e in session.execute(select(AuditEvent).where(AuditEvent.event == "received")).scalars()
        }
    slow_id, fast_id = by_session.json()["forget_request_id"], fast.json()["forget_request_id"]
    row = rows[fast_id]
    assert (
        row.status,
        row.model_id,
        row.external_ref,
        row.requested_by,
        row.method,
        row.params,
        row.job_id,
    ) == ("pending", model, "fast-1", "dpo", None, {}, None)
    assert idsets.decode(row.ids).tolist() == [2, 5, 9] and row.ids_sha256 == idsets.sha256([2, 5, 9])
    assert events[fast_id].detail == {
        "model_id": model,
        "n_ids": 3,
        "sha256": idsets.sha256([2, 5, 9]),
        "requested_by": "dpo",
        "forget_class": None,
        "external_ref": "fast-1",
        "batched": True,
    }
    assert set(events[fast_id].detail) - {"external_ref"} == set(events[slow_id].detail)
    assert (events[fast_id].tenant_id, events[fast_id].object_type) == ("local", "forget_request")
    assert events[fast_id].at == row.created_at

    # Bad ids are refused as the usual way refuses them, and nothing is stored.
    bad = client.post("/forget-requests", json={"model_id": "m1", "forget_ids": [3, 3]})
    assert bad.status_code == 422 and "duplicates" in bad.text and sessions == []
    # An external_ref already taken, an unknown model or a class goes the usual way, which answers them.
    monkeypatch.undo()
    assert client.post("/forget-requests", json=body).json() == fast.json()
    assert client.post("/forget-requests", json={**body, "model_id": "nope"}).status_code == 404
    assert _count(ForgetRequest) == 2
