"""Fan-out jobs always end: cancelled parents and their whole trees, parents of failed children, and parents
whose children ended while nobody was there to notice (the sweep), on Postgres.

Jobs are created over HTTP and run in this process by the same runner a worker uses.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core import jobs
from core.db import session_scope
from core.maintenance import sweep
from core.queue import get_celery, queue_length, worker_queues
from core.tables import FINISHED, Job, utcnow
from tests.utils import drain, next_queued_job, train_model
from worker.runner import run_job
from worker.settle import notify

FORGET = list(range(0, 300, 30))


@pytest.fixture
def tiny(client) -> str:
    return train_model("tiny", {"width": 4}, {"epochs": 1, "batch_size": 64})


def _tree(root_id: str) -> dict[str, Job]:
    """Every job below the root, with the root, by id."""
    out: dict[str, Job] = {}
    with session_scope() as session:
        frontier = [root_id]
        out[root_id] = session.get(Job, root_id)
        while frontier:
            rows = list(session.execute(select(Job).where(Job.parent_id.in_(frontier))).scalars())
            out.update({j.id: j for j in rows})
            frontier = [j.id for j in rows]
        session.expunge_all()
    return out


def _study(client, methods: list[str]) -> dict:
    body = {"model_id": "tiny", "forget_ids": FORGET, "methods": methods, "n_models": 2}
    r = client.post("/studies", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def _stop_like_a_worker(job_id: str) -> None:
    """What the runner does when a running job sees its cancel flag: cancelled, then its parents told."""
    with session_scope() as session:
        assert session.get(Job, job_id).cancel_requested
        jobs.finish_unsuccessfully(session, job_id, "cancelled", "cancelled on request")
    notify(job_id)


def test_cancelling_a_study_cancels_every_parent_below_it(client, tiny):
    """The issue's case: one run running, the rest queued; nothing may stay running or end 'failed'."""
    study = _study(client, ["none", "finetune", "retrain"])
    running = next_queued_job()
    with session_scope() as session:
        assert jobs.claim(session, running) is not None  # a worker holds it
    r = client.post(f"/jobs/{study['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    _stop_like_a_worker(running)
    tree = _tree(study["job_id"])
    assert len(tree) > 4
    assert {j.status for j in tree.values()} == {"cancelled"}, {j.kind: j.status for j in tree.values()}
    evaluations = [j for j in tree.values() if j.kind == "evaluate"]
    assert len(evaluations) == 3 and all(e.finished_at is not None for e in evaluations)


def test_cancelling_one_evaluation_of_a_study_ends_the_study_cancelled(client, tiny):
    study = _study(client, ["none", "finetune"])
    tree = _tree(study["job_id"])
    first = next(j for j in tree.values() if j.kind == "evaluate")
    assert client.post(f"/jobs/{first.id}/cancel").json()["status"] == "cancelled"
    tree = _tree(study["job_id"])
    assert {j.status for j in tree.values()} == {"cancelled"}, {j.kind: j.status for j in tree.values()}
    assert "did not succeed" in tree[study["job_id"]].error


def test_a_cancelled_run_cancels_its_evaluation(client, tiny):
    body = {"model_id": "tiny", "forget_ids": FORGET, "method": "none", "n_models": 2}
    cancelled = client.post("/evaluations", json=body).json()["job_id"]
    run = next(j for j in _tree(cancelled).values() if j.kind == "unlearn_run")
    assert client.post(f"/jobs/{run.id}/cancel").json()["status"] == "cancelled"  # queued: ends at once
    tree = _tree(cancelled)
    assert tree[cancelled].status == "cancelled", tree[cancelled].error
    assert {j.status for j in tree.values()} == {"cancelled"}


def test_cancelling_one_evaluation_leaves_the_reference_runs_another_waits_for(client, tiny):
    """Reference runs are shared: the second evaluation goes on and succeeds."""
    body = {"model_id": "tiny", "forget_ids": FORGET, "n_models": 2}
    first = client.post("/evaluations", json={**body, "method": "none"}).json()
    second = client.post("/evaluations", json={**body, "method": "finetune"}).json()
    assert client.post(f"/jobs/{first['job_id']}/cancel").json()["status"] == "cancelled"
    drain()
    assert client.get(f"/jobs/{second['job_id']}").json()["status"] == "succeeded"
    assert {j.status for j in _tree(first["job_id"]).values() if j.kind != "reference_run"} == {"cancelled"}


def _purge_queues() -> None:
    with get_celery().connection_for_write() as conn:
        for name in worker_queues():
            conn.default_channel.queue_purge(name)


def _age_parents() -> None:
    past = utcnow() - timedelta(seconds=3600)
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.kind.in_(("evaluate", "study", "reference"))).values(heartbeat_at=past)
        )


def test_the_sweep_scores_a_parent_whose_runs_all_succeeded_unnoticed(client, tiny, monkeypatch):
    """The worker that finished the last run died before it settled the parent."""
    import worker.runner

    created = client.post(
        "/evaluations", json={"model_id": "tiny", "forget_ids": FORGET, "method": "none", "n_models": 2}
    ).json()
    monkeypatch.setattr(worker.runner, "notify", lambda job_id: None)
    runs = [j.id for j in _tree(created["job_id"]).values() if j.kind in ("reference_run", "unlearn_run")]
    assert len(runs) >= 3  # two unlearned runs and the reference models (in one pack or more)
    for job_id in runs:  # in this process, where the patch holds: no worker settles the parent
        assert run_job(job_id) == "succeeded"
    monkeypatch.undo()
    assert client.get(f"/jobs/{created['job_id']}").json()["status"] == "running"
    assert sweep().parents_to_score == []  # its heartbeat is recent: not yet
    _age_parents()
    _purge_queues()  # the runs' own messages, already run in this process
    report = sweep()
    assert report.parents_to_score == [created["job_id"]]
    assert queue_length() == 1
    assert sweep().parents_to_score == []  # once per stale period
    assert run_job(created["job_id"]) is None  # what a worker does with the message
    job = client.get(f"/jobs/{created['job_id']}").json()
    assert job["status"] == "succeeded", job
    assert client.get(f"/evaluations/{created['evaluation_id']}").json()["results"]["epsilon_hat"] is not None


def test_the_sweep_ends_a_parent_whose_run_failed_unnoticed(client, tiny):
    created = client.post(
        "/evaluations", json={"model_id": "tiny", "forget_ids": FORGET, "method": "none", "n_models": 2}
    ).json()
    run = next(j for j in _tree(created["job_id"]).values() if j.kind == "unlearn_run")
    with session_scope() as session:
        jobs.finish_unsuccessfully(session, run.id, "failed", "the worker's disk filled up")
    _age_parents()
    report = sweep()
    assert report.ended_parents == [created["job_id"]]
    tree = _tree(created["job_id"])
    assert tree[created["job_id"]].status == "failed" and "disk" in tree[created["job_id"]].error
    assert all(j.status in FINISHED for j in tree.values())
