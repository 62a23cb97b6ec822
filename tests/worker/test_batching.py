"""Batched unlearning on Postgres + Redis: windows, limits, one batch at a time, lineage across batches."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from core import certificates, idsets
from core.batching import BATCH_KIND, start_batch
from core.batching import sweep_batches as batch_pass
from core.db import session_scope
from core.maintenance import sweep
from core.queue import queue_length
from core.services import model_lineage
from core.tables import AuditEvent, ForgetPolicy, ForgetRequest, Job, Model, ModelStatus, utcnow
from tests.utils import add_ready_model, drain, train_model


def sweep_batches():
    """The batch pass as the maintenance sweep runs it: the batches it starts are published to the broker."""
    from core.services import publish_jobs

    report = batch_pass()
    publish_jobs(report.publish)
    return report


@pytest.fixture(autouse=True)
def no_background_sweep(monkeypatch):
    """The tests sweep when they choose; the API's own sweep thread would start batches behind their back."""
    monkeypatch.setenv("LETHE_MAINTENANCE_SECONDS", "0")


@pytest.fixture
def tiny(client) -> str:
    return train_model("tiny", {"width": 4}, {"epochs": 1, "lr": 0.05, "batch_size": 64})


def _policy(client, **fields) -> None:
    r = client.put("/models/tiny/forget-policy", json={"method": "none", "window_seconds": 3600, **fields})
    assert r.status_code == 200, r.text


def _ask(client, ids: list[int], model: str = "tiny") -> str:
    r = client.post("/forget-requests", json={"model_id": model, "forget_ids": ids})
    assert r.status_code == 202, r.text
    return r.json()["forget_request_id"]


def _age_pending(seconds: float = 7200) -> None:
    """As if every pending request had come `seconds` ago: the window closes without waiting for it."""
    with session_scope() as session:
        session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.status == "pending")
            .values(created_at=utcnow() - timedelta(seconds=seconds))
        )


def _requests(client, ids: list[str]) -> list[dict]:
    return [client.get(f"/forget-requests/{i}").json() for i in ids]


def _batch_jobs() -> list[Job]:
    with session_scope() as session:
        return list(
            session.execute(select(Job).where(Job.kind == BATCH_KIND).order_by(Job.created_at)).scalars()
        )


def _forgotten(model_id: str) -> list[int]:
    with session_scope() as session:
        return idsets.decode(session.get(Model, model_id).forgotten_ids).tolist()


def test_a_closing_window_forgets_every_pending_request_in_one_job_and_one_version(client, tiny):
    _policy(client)
    asked = [_ask(client, ids) for ids in ([5, 1], [9], [1, 30])]
    assert sweep_batches().started == []  # the window (an hour) is still open
    _age_pending()
    report = sweep_batches()
    assert len(report.started) == 1 and [j.id for j in _batch_jobs()] == report.started
    job_id = report.started[0]
    scheduled = _requests(client, asked)
    assert {(r["status"], r["job_id"], r["method"]) for r in scheduled} == {("scheduled", job_id, "none")}
    assert client.get("/models/tiny/forget-policy").json()["running_job_id"] == job_id
    assert drain() == 1
    done = _requests(client, asked)
    child = done[0]["result_model_id"]
    assert {(r["status"], r["result_model_id"], r["job_id"]) for r in done} == {("fulfilled", child, job_id)}
    assert done[0]["batch"] == {
        "job_id": job_id,
        "status": "succeeded",
        "base_model_id": tiny,
        "n_requests": 3,
        "n_ids": 4,
        "evaluation_id": None,
    }
    assert [e["event"] for e in done[0]["events"] if e["object_type"] == "forget_request"] == [
        "received",
        "scheduled",
        "fulfilled",
    ]
    assert _forgotten(child) == [1, 5, 9, 30]
    with session_scope() as session:
        row = session.get(Model, child)
        assert row.parent_id == tiny and row.status == ModelStatus.ready and row.metrics["n_requests"] == 3
    policy = client.get("/models/tiny/forget-policy").json()
    assert policy["head_model_id"] == child and policy["running_job_id"] is None and policy["pending"] == 0
    assert client.get("/forget-requests", params={"status": "fulfilled"}).json()["count"] == 3
    assert sweep_batches().started == []  # nothing left to do


def test_a_request_during_a_running_batch_goes_into_the_next_which_starts_from_the_newest_version(
    client, tiny
):
    _policy(client, window_seconds=0)
    first = [_ask(client, [1, 2]), _ask(client, [3])]
    (batch1,) = sweep_batches().started
    late = _ask(client, [2, 40])  # arrives while batch 1 is queued: it must wait for the next batch
    assert sweep_batches().started == []  # one batch per model at a time
    assert drain() == 1
    assert _requests(client, [late])[0]["status"] == "pending"
    child1 = _requests(client, first)[0]["result_model_id"]
    (batch2,) = sweep_batches().started
    assert drain() == 1
    (second,) = _requests(client, [late])
    child2 = second["result_model_id"]
    assert second["status"] == "fulfilled" and second["job_id"] == batch2 != batch1
    assert second["batch"]["base_model_id"] == child1
    assert _forgotten(child1) == [1, 2, 3] and _forgotten(child2) == [1, 2, 3, 40]  # lineage keeps every id
    with session_scope() as session:
        assert model_lineage(session, session.get(Model, child2)) == [child2, child1, tiny]
    assert client.get("/models/tiny/forget-policy").json()["head_model_id"] == child2

    # Each certificate names its batch and the versions it went from and to.
    for request_id, batch, base, child, n_requests in (
        (first[1], batch1, tiny, child1, 2),
        (late, batch2, child1, child2, 1),
    ):
        r = client.get(f"/forget-requests/{request_id}/certificate")
        assert r.status_code == 200, r.text
        cert = r.json()
        certificates.verify(cert)
        assert cert["batch"] == {
            "job_id": batch,
            "base_model_id": base,
            "result_model_id": child,
            "n_requests": n_requests,
            "n_ids": 3 if batch == batch1 else 2,
            "evaluation_id": None,
        }
        assert (cert["method"]["job_id"], cert["parent_model"]["id"], cert["result_model"]["id"]) == (
            batch,
            base,
            child,
        )
        assert cert["result_model"]["n_forgotten"] == len(_forgotten(child))


def test_batches_go_on_from_the_newest_version_after_the_first_one_is_retired(client, tiny):
    _policy(client, window_seconds=0)
    _ask(client, [1])
    sweep_batches()
    drain()
    with (
        session_scope() as session
    ):  # its weights deleted: it still names the lineage, nothing starts from it
        session.get(Model, tiny).status = "purged"
    late = _ask(client, [2])
    (batch,) = sweep_batches().started
    drain()
    (r,) = _requests(client, [late])
    assert r["status"] == "fulfilled" and r["job_id"] == batch and _forgotten(r["result_model_id"]) == [1, 2]


def test_a_tenant_that_purges_parents_has_each_batchs_base_version_purged_once_its_child_is_ready(
    client, tiny
):
    from core.artifacts import get_store

    assert client.patch("/tenant/settings", json={"auto_purge_parents": True}).status_code == 200
    _policy(client, window_seconds=0)
    _ask(client, [1])
    sweep_batches()
    assert drain() == 1
    child1 = client.get("/models/tiny/forget-policy").json()["head_model_id"]
    _ask(client, [2])
    sweep_batches()
    assert drain() == 1
    child2 = client.get("/models/tiny/forget-policy").json()["head_model_id"]
    with session_scope() as session:
        statuses = {m: session.get(Model, m).status for m in (tiny, child1, child2)}
        keys = {m: session.get(Model, m).checkpoint for m in (tiny, child1, child2)}
        purged = session.execute(
            select(AuditEvent.object_id, AuditEvent.detail).where(AuditEvent.event == "purged")
        ).all()
    assert statuses == {tiny: "purged", child1: "purged", child2: "ready"}
    assert [get_store().exists(keys[m]) for m in (tiny, child1, child2)] == [False, False, True]
    assert {(m, d["reason"], d["child_id"]) for m, d in purged} == {
        (tiny, "auto_purge_parents", child1),
        (child1, "auto_purge_parents", child2),
    }


def test_ids_the_newest_version_already_forgot_are_fulfilled_by_it_without_a_new_version(client, tiny):
    _policy(client, window_seconds=0)
    _ask(client, [7, 8])
    sweep_batches()
    drain()
    head = client.get("/models/tiny/forget-policy").json()["head_model_id"]
    again = _ask(client, [8])
    sweep_batches()
    drain()
    (r,) = _requests(client, [again])
    assert r["status"] == "fulfilled" and r["result_model_id"] == head
    with session_scope() as session:
        assert session.execute(select(Model.id).where(Model.parent_id == head)).first() is None


def test_request_and_sample_limits_start_a_batch_before_the_window_closes(client, tiny):
    _policy(client, max_requests=2)
    a = _ask(client, [1])
    assert sweep_batches().started == []
    b = _ask(client, [2])
    (batch,) = sweep_batches().started
    assert {r["job_id"] for r in _requests(client, [a, b])} == {batch}
    drain()
    _policy(client, max_samples=5)
    c, d = _ask(client, [10, 11, 12]), _ask(client, [13, 14, 15])
    (batch,) = sweep_batches().started  # 6 ids pending >= 5; the batch takes what fits: the first request
    assert [(r["status"], r["job_id"]) for r in _requests(client, [c, d])] == [
        ("scheduled", batch),
        ("pending", None),
    ]
    drain()
    assert sweep_batches().started == []  # 3 ids left pending: under the limit, window open


def test_concurrent_sweeps_start_one_batch(client, tiny):
    _policy(client, window_seconds=0)
    for i in range(5):
        _ask(client, [i])
    barrier = threading.Barrier(4)
    started: list[str] = []

    def one() -> None:
        barrier.wait()
        started.extend(sweep_batches().started)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    jobs = _batch_jobs()
    assert len(started) == 1 and [j.id for j in jobs] == started
    with session_scope() as session:
        statuses = session.execute(select(ForgetRequest.status, ForgetRequest.job_id)).all()
    assert set(statuses) == {("scheduled", started[0])}
    # A sweep that found the model due just before another one claimed it must not start a second batch.
    _ask(client, [9])
    with session_scope() as session:
        assert start_batch(session, tiny) == []
    assert [j.id for j in _batch_jobs()] == started


def test_the_maintenance_sweep_starts_and_publishes_due_batches(client, tiny):
    _policy(client, window_seconds=0)
    _ask(client, [3])
    before = queue_length()
    sweep()
    (job,) = _batch_jobs()
    assert job.status == "queued" and queue_length() == before + 1


def test_a_policy_that_evaluates_queues_an_evaluation_of_each_batchs_new_ids(client, tiny):
    _policy(client, window_seconds=0, evaluate=True)
    asked = _ask(client, [4, 2])
    report = sweep_batches()
    (batch,) = report.started
    (r,) = _requests(client, [asked])
    evaluation = client.get(f"/evaluations/{r['batch']['evaluation_id']}").json()
    assert evaluation["model_id"] == tiny and evaluation["method"] == "none"
    references = client.get(f"/references/{evaluation['reference_set_id']}").json()
    assert references["forget_sha256"] == idsets.sha256([2, 4])
    with session_scope() as session:
        runs = session.execute(select(Job.id).where(Job.status == "queued", Job.id != batch)).scalars().all()
    assert report.publish[0] == batch and set(report.publish[1:]) == set(runs) and len(runs) >= 2


def test_a_failed_batch_fails_its_requests_with_the_reason_and_frees_the_model(client, tiny):
    _policy(client, window_seconds=0)
    asked = [_ask(client, [1]), _ask(client, [2])]
    (batch,) = sweep_batches().started
    assert {r["job_id"] for r in _requests(client, asked)} == {batch}
    with session_scope() as session:  # the checkpoint the batch must start from is gone
        session.get(Model, tiny).checkpoint = "models/missing/model.safetensors"
    drain()
    failed = _requests(client, asked)
    assert {r["status"] for r in failed} == {"failed"}
    assert all("missing" in r["error"] for r in failed) and failed[0]["batch"]["status"] == "failed"
    assert client.get("/models/tiny/forget-policy").json()["running_job_id"] is None


def test_a_batch_cancelled_while_queued_is_settled_by_the_sweep(client, tiny):
    _policy(client, window_seconds=0)
    asked = _ask(client, [1])
    (batch,) = sweep_batches().started
    assert client.post(f"/jobs/{batch}/cancel").json()["status"] == "cancelled"
    report = sweep_batches()
    assert report.settled == [batch] and report.started == []
    (r,) = _requests(client, [asked])
    assert r["status"] == "failed" and r["error"] == "cancelled on request"
    with session_scope() as session:
        assert session.get(ForgetPolicy, tiny).running_job_id is None
    again = _ask(client, [1])  # the model takes requests and batches again
    assert sweep_batches().started and _requests(client, [again])[0]["status"] == "scheduled"


def test_requests_for_a_model_without_a_policy_stay_pending_and_one_whose_model_failed_are_rejected(client):
    with session_scope() as session:
        add_ready_model(session, "free")
        add_ready_model(session, "broken").status = ModelStatus.failed
        add_ready_model(session, "stopped").status = ModelStatus.cancelled
    free, broken = _ask(client, [1], "free"), _ask(client, [2], "broken")
    stopped = _ask(client, [3], "stopped")
    _age_pending()
    report = sweep_batches()
    assert report.started == [] and sorted(report.rejected) == sorted([broken, stopped])
    statuses = {r["id"]: (r["status"], r["error"]) for r in _requests(client, [free, broken, stopped])}
    assert statuses[free] == ("pending", None)
    assert statuses[broken][0] == "rejected" and "failed to train" in statuses[broken][1]
    assert statuses[stopped][0] == "rejected" and "training cancelled" in statuses[stopped][1]


def test_a_batch_really_unlearns(client, tiny):
    """With a real method the new version differs from its parent and records the batch in its metrics."""
    client.put(
        "/models/tiny/forget-policy",
        json={"method": "finetune", "params": {"epochs": 1}, "window_seconds": 0},
    )
    asked = [_ask(client, list(range(0, 20))), _ask(client, list(range(10, 40)))]
    sweep_batches()
    assert drain() == 1
    child = _requests(client, asked)[0]["result_model_id"]
    with session_scope() as session:
        row = session.get(Model, child)
        assert row.made_by == "finetune" and row.metrics["n_forget"] == 40 and row.metrics["n_requests"] == 2
        assert 0.0 <= row.metrics["forget_accuracy"] <= 1.0
    assert _forgotten(child) == np.arange(40).tolist()


@pytest.fixture
def embedded_client(tmp_path, monkeypatch):
    """An API client on the embedded default (SQLite), migrated, with no background sweep."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.migrate import upgrade
    from core.settings import get_settings
    from tests.utils import configure, new_key, reset_caches

    configure(monkeypatch, home=tmp_path / "home", maintenance_seconds=0)
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    try:
        with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as c:
            yield c
    finally:
        reset_caches()


def test_windows_and_successive_batches_on_the_embedded_default(embedded_client):
    client = embedded_client
    tiny = train_model("tiny", {"width": 4}, {"epochs": 1, "lr": 0.05, "batch_size": 64})
    _policy(client)
    first = _ask(client, [1, 2])
    assert sweep_batches().started == []  # SQLite gives times back without a zone: the window is still open
    _age_pending()
    (batch1,) = sweep_batches().started
    late = _ask(client, [3])
    with session_scope() as session:
        assert start_batch(session, tiny) == []  # the model is taken while batch 1 runs
    assert drain() == 1
    _age_pending()
    (batch2,) = sweep_batches().started
    assert drain() == 1
    one, two = _requests(client, [first, late])
    assert (one["status"], one["job_id"], two["status"], two["job_id"]) == (
        "fulfilled",
        batch1,
        "fulfilled",
        batch2,
    )
    assert two["batch"]["base_model_id"] == one["result_model_id"]
    assert _forgotten(two["result_model_id"]) == [1, 2, 3]
    page = client.get("/forget-requests", params={"status": "fulfilled", "limit": 1}).json()
    rest = client.get(
        "/forget-requests", params={"status": "fulfilled", "cursor": page["next_cursor"]}
    ).json()
    assert [r["id"] for r in page["data"] + rest["data"]] == [first, late] and rest["next_cursor"] is None
