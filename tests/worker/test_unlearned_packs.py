"""An evaluation's unlearned runs train in packs (LETHE_PACK_SIZE per task) when the method packs, on Postgres."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from core import jobs
from core.artifacts import get_store
from core.db import session_scope
from core.settings import get_settings
from core.tables import Job, JobStatus, Run
from tests.utils import drain, train_model
from worker.runner import run_job

FORGET = list(range(0, 600, 20))


@pytest.fixture
def tiny(client, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ready width-4 digits model, and packs of two runs per task."""
    monkeypatch.setenv("LETHE_PACK_SIZE", "2")
    get_settings.cache_clear()
    return train_model("tiny", {"width": 4}, {"epochs": 2, "lr": 0.05, "batch_size": 64})


def _evaluate(client, method: str, n: int) -> dict:
    body = {
        "model_id": "tiny",
        "forget_ids": FORGET,
        "method": method,
        "n_models": n,
        "params": {"epochs": 1},
    }
    if method == "none":
        body.pop("params")
    r = client.post("/evaluations", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def _unlearned(evaluation_id: str) -> list[Run]:
    with session_scope() as session:
        rows = session.execute(select(Run).where(Run.evaluation_id == evaluation_id).order_by(Run.seed))
        return list(rows.scalars())


def _packs(evaluation_id: str) -> list[str]:
    """The unlearned runs' job ids, in seed order, each once."""
    return list(dict.fromkeys(r.job_id for r in _unlearned(evaluation_id)))


def test_unlearned_runs_go_out_as_packs_and_are_stored_as_separate_runs(client, tiny):
    created = _evaluate(client, "finetune", 5)
    runs = _unlearned(created["evaluation_id"])
    assert [r.seed for r in runs] == [10_000, 10_001, 10_002, 10_003, 10_004]
    packs = _packs(created["evaluation_id"])
    assert [sum(r.job_id == j for r in runs) for j in packs] == [2, 2, 1]
    with session_scope() as session:
        assert [session.get(Job, j).params for j in packs] == [
            {"seeds": [10_000, 10_001]},
            {"seeds": [10_002, 10_003]},
            {"seeds": [10_004]},
        ]
    assert drain() == 6  # three reference packs, three unlearned packs
    evaluation = client.get(f"/evaluations/{created['evaluation_id']}").json()
    assert evaluation["status"] == "succeeded", evaluation
    results = evaluation["results"]
    assert results["n_unlearned"] == 5 and results["unlearned_run_ids"] == [r.id for r in runs]
    for job_id in packs:
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["progress"] == 1.0
        assert job["progress_info"]["stage"] == "finetune"
    outputs = []
    for run in _unlearned(created["evaluation_id"]):
        assert run.metrics["test_accuracy"] > 0.3 and run.metrics["wall_seconds"] > 0
        outputs.append(get_store().read_array(run.outputs))
    assert all(o.shape == (len(FORGET), 10) for o in outputs)
    assert not np.allclose(outputs[0], outputs[1])  # one pack, two different networks

    # A method with its own loop, or none at all, runs one seed per task as before.
    other = _evaluate(client, "none", 3)
    assert len(_packs(other["evaluation_id"])) == 3  # one job per run


def test_a_pack_is_retried_whole_and_a_failed_one_loses_no_model_of_another(client, tiny):
    created = _evaluate(client, "random_label", 5)
    first, second, third = _packs(created["evaluation_id"])
    refs = [j for j in _tree_runs(created["job_id"]) if j not in (first, second, third)]
    for job_id in refs:
        assert run_job(job_id) == "succeeded"
    assert run_job(first) == "succeeded"
    with session_scope() as session:  # a worker took the second pack and was lost: it goes back to the queue
        assert jobs.claim(session, second) is not None
        assert jobs.requeue(session, second, "its worker was lost")
    assert run_job(second) == "succeeded"
    with session_scope() as session:
        assert session.get(Job, second).attempts == 2
    assert client.post(f"/jobs/{third}/cancel").json()["status"] == "cancelled"
    assert drain() == 0  # the evaluation ended with its cancelled pack, not at the stale sweep
    with session_scope() as session:
        statuses = [session.get(Job, j).status for j in (first, second, third)]
    assert statuses == [JobStatus.succeeded, JobStatus.succeeded, JobStatus.cancelled]
    kept = [r for r in _unlearned(created["evaluation_id"]) if r.job_id in (first, second)]
    assert len(kept) == 4 and all(r.outputs and r.metrics["wall_seconds"] > 0 for r in kept)
    assert client.get(f"/jobs/{created['job_id']}").json()["status"] == "cancelled"


def _tree_runs(parent_id: str) -> list[str]:
    with session_scope() as session:
        return list(session.execute(select(Job.id).where(Job.parent_id == parent_id)).scalars())
