""" "method": "auto" on Postgres + Redis and a real worker: validation, the search's record, reused proxy references."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.tables import ForgetRequest, Job, Model, ReferenceSet, Run
from ml.data import load_dataset
from ml.methods.auto import SPACE
from ml.methods.params import AutoParams
from tests.utils import add_ready_model, drain, train_model

SMALL = {"trials": 2, "proxies": 1, "n_models": 2, "time_budget_seconds": 120}


@pytest.fixture
def stored(client) -> str:
    with session_scope() as session:
        return add_ready_model(session, "m1").id


def test_auto_is_accepted_with_its_params_checked_and_defaults_stored(client, stored):
    r = client.post("/unlearn", json={"model_id": "m1", "forget_ids": [1, 2], "method": "auto"})
    assert r.status_code == 202, r.text
    with session_scope() as session:
        req = session.get(ForgetRequest, r.json()["forget_request_id"])
        assert req.method == "auto" and req.params == AutoParams().model_dump(mode="json")
        assert req.params["budget"] == 0.1 and req.params["accuracy_tolerance"] == 0.01
    for bad, field in (({"budget": 2}, "budget"), ({"trials": 0}, "trials"), ({"epochs": 3}, "epochs")):
        r = client.post(
            "/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "auto", "params": bad}
        )
        assert r.status_code == 422 and field in r.text, r.text
    r = client.post("/evaluations", json={"model_id": "m1", "forget_ids": [1], "method": "auto"})
    assert r.status_code == 422  # an evaluation measures one fixed method
    r = client.put("/models/m1/forget-policy", json={"method": "auto", "params": {"trials": 5}})
    assert r.status_code == 200 and r.json()["params"]["trials"] == 5, r.text
    r = client.put("/models/m1/forget-policy", json={"method": "auto", "evaluate": True})
    assert r.status_code == 422 and "evaluate" in r.text


def _same_mix(labels: np.ndarray, forget: list[int], avoid: set[int]) -> list[int]:
    """Other ids with the same count per class as `forget`."""
    out: list[int] = []
    for c, n in zip(*np.unique(labels[forget], return_counts=True), strict=True):
        pool = [int(i) for i in np.flatnonzero(labels == c) if int(i) not in avoid]
        out += pool[:n]
    return sorted(out)


def test_auto_chooses_applies_records_and_reuses_its_proxy_references(client):
    model_id = train_model("tiny", {"width": 4}, {"epochs": 10, "lr": 0.05, "batch_size": 64})
    labels = load_dataset("digits").train_y
    first = list(range(0, 12))
    r = client.post(
        "/unlearn", json={"model_id": "tiny", "forget_ids": first, "method": "auto", "params": SMALL}
    )
    assert r.status_code == 202, r.text
    drain()
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "succeeded", job["error"]
    auto = job["result"]["auto"]
    assert set(auto) == {"chosen_method", "params", "score", "trials"}
    assert auto["chosen_method"] in SPACE and 1 <= len(auto["trials"]) <= 2
    ran = [t for t in auto["trials"] if t["score"] is not None]
    assert ran and all(t["cost"] <= 0.1 + 1e-9 for t in ran)
    feasible = [t["score"] for t in ran if t["feasible"]]
    assert auto["score"] == (
        min(feasible) if feasible else min(ran, key=lambda t: t["accuracy_drop"])["score"]
    )
    child = job["result"]["model_id"]
    with session_scope() as session:
        row = session.get(Model, child)
        assert row.made_by == auto["chosen_method"] and row.metrics["auto"] == auto
        sets = session.execute(select(ReferenceSet.id)).scalars().all()
        assert len(sets) == 1  # one proxy
        runs = session.execute(select(Run).where(Run.reference_set_id == sets[0])).scalars().all()
        assert len(runs) == 2 and {r.job_id for r in runs} == {job["id"]} and all(r.outputs for r in runs)
    cert = client.get(f"/forget-requests/{r.json()['forget_request_id']}/certificate").json()
    assert cert["auto"] == auto and cert["method"]["name"] == "auto"

    # Another request of the same size and class mix draws the same proxy and trains no reference model.
    second = _same_mix(labels, first, set(first))
    assert second != first
    r = client.post(
        "/unlearn", json={"model_id": model_id, "forget_ids": second, "method": "auto", "params": SMALL}
    )
    drain()
    assert client.get(f"/jobs/{r.json()['job_id']}").json()["status"] == "succeeded"
    with session_scope() as session:
        assert session.execute(select(func.count()).select_from(Run)).scalar_one() == 2
        assert session.execute(select(func.count()).select_from(ReferenceSet)).scalar_one() == 1
        assert session.get(Job, r.json()["job_id"]).result["auto"]["trials"]
