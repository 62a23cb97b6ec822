"""Reference runs train in packs (LETHE_PACK_SIZE per task), each model stored as its own run, on Postgres."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from core.artifacts import get_store
from core.db import session_scope
from core.settings import get_settings
from core.tables import Job, JobStatus, Run
from tests.utils import drain, train_model
from worker.runner import run_job

FORGET = list(range(0, 600, 20))


@pytest.fixture
def tiny(client, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ready width-4 digits model, and packs of two reference runs per task."""
    monkeypatch.setenv("LETHE_PACK_SIZE", "2")
    get_settings.cache_clear()
    return train_model("tiny", {"width": 4}, {"epochs": 2, "lr": 0.05, "batch_size": 64})


def _runs(rs_id: str) -> list[Run]:
    with session_scope() as session:
        rows = session.execute(select(Run).where(Run.reference_set_id == rs_id).order_by(Run.seed)).scalars()
        return [r for r in rows]


def _reference(client, n: int) -> dict:
    r = client.post("/references", json={"model_id": "tiny", "forget_ids": FORGET, "n_models": n})
    assert r.status_code == 202, r.text
    return r.json()


def test_runs_train_in_packs_and_are_stored_as_separate_runs(client, tiny):
    created = _reference(client, 5)
    runs = _runs(created["reference_set_id"])
    assert [r.seed for r in runs] == [0, 1, 2, 3, 4]
    assert [len([r for r in runs if r.job_id == j]) for j in dict.fromkeys(r.job_id for r in runs)] == [
        2,
        2,
        1,
    ]
    assert drain() == 3
    job = client.get(f"/jobs/{created['job_id']}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert client.get(f"/references/{created['reference_set_id']}").json()["runs"] == {"succeeded": 5}
    outputs = []
    for run in _runs(created["reference_set_id"]):
        assert run.metrics["test_accuracy"] > 0.3 and run.metrics["wall_seconds"] > 0
        outputs.append(get_store().read_array(run.outputs))
    assert all(o.shape == (len(FORGET), 10) for o in outputs)
    assert not np.allclose(outputs[0], outputs[1])  # one pack, two different networks


def test_a_pack_that_fails_loses_no_model_of_another_pack(client, tiny):
    created = _reference(client, 4)
    runs = _runs(created["reference_set_id"])
    first, second = list(dict.fromkeys(r.job_id for r in runs))
    run_job(first)
    # Cancelled the way a user does: the reference set's job ends with it at once, not at the stale sweep.
    assert client.post(f"/jobs/{second}/cancel").json()["status"] == "cancelled"
    assert client.get(f"/jobs/{created['job_id']}").json()["status"] == "cancelled"
    assert drain() == 0
    with session_scope() as session:
        assert session.get(Job, first).status == JobStatus.succeeded
        assert session.get(Job, second).status == JobStatus.cancelled
    kept = [r for r in _runs(created["reference_set_id"]) if r.job_id == first]
    assert len(kept) == 2 and all(r.outputs for r in kept)

    again = _reference(client, 4)  # only the cancelled pack's two models are trained again
    new = [r for r in _runs(again["reference_set_id"]) if r.job_id not in (first, second)]
    assert [r.seed for r in new] == [4, 5] and len({r.job_id for r in new}) == 1
    assert drain() == 1
    assert client.get(f"/references/{again['reference_set_id']}").json()["runs"] == {
        "succeeded": 4,
        "cancelled": 2,
    }
