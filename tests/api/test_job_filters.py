"""GET /jobs filters on both backends: by model (id or name), top-level jobs only, and by id prefix."""

from __future__ import annotations

import pytest

from core.db import session_scope
from core.tables import Job, JobStatus
from tests.utils import add_ready_model


@pytest.fixture
def jobs(any_client) -> tuple[object, dict[str, str]]:
    """An evaluation with one run, a training of another model, and another tenant's job: their ids."""
    with session_scope() as session:
        m1, m2 = add_ready_model(session, "m1"), add_ready_model(session, "m2")
        done = {"status": JobStatus.succeeded, "progress": 1.0}
        evaluate = Job(kind="evaluate", tenant_id="local", model_id=m1.id, **done)
        session.add(evaluate)
        session.flush()
        rows = {
            "evaluate": evaluate,
            "run": Job(kind="unlearn_run", tenant_id="local", model_id=m1.id, parent_id=evaluate.id, **done),
            "train": Job(kind="train", tenant_id="local", model_id=m2.id, **done),
            "foreign": Job(kind="train", tenant_id="other", model_id=m1.id, **done),
        }
        session.add_all(rows.values())
        session.flush()
        ids = {name: job.id for name, job in rows.items()} | {"m1": m1.id}
    return any_client, ids


def listed(client, **query: object) -> list[str]:
    r = client.get("/jobs", params=query)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["data"])
    return [j["id"] for j in body["data"]]


def test_without_filters_every_job_of_the_tenant_is_listed_runs_included(jobs):
    client, ids = jobs
    assert sorted(listed(client)) == sorted([ids["evaluate"], ids["run"], ids["train"]])
    run = next(j for j in client.get("/jobs").json()["data"] if j["id"] == ids["run"])
    assert run["parent_id"] == ids["evaluate"]
    assert client.get(f"/jobs/{ids['evaluate']}").json()["parent_id"] is None


def test_top_level_leaves_out_runs_and_model_id_takes_an_id_or_a_name(jobs):
    client, ids = jobs
    assert sorted(listed(client, top_level="true")) == sorted([ids["evaluate"], ids["train"]])
    assert sorted(listed(client, model_id="m1")) == sorted([ids["evaluate"], ids["run"]])
    assert listed(client, model_id=ids["m1"], top_level="true") == [ids["evaluate"]]
    assert listed(client, model_id="m2", kind="train", status="succeeded") == [ids["train"]]
    assert listed(client, model_id="m2", status="running") == []
    r = client.get("/jobs", params={"model_id": "nope"})
    assert r.status_code == 404 and "model 'nope' not found" in r.json()["detail"]


def test_id_prefix_finds_the_job_whatever_its_case_and_never_another_tenants(jobs):
    client, ids = jobs
    assert listed(client, id_prefix=ids["run"][:8]) == [ids["run"]]
    assert listed(client, id_prefix=ids["run"][:8].upper()) == [ids["run"]]
    assert listed(client, id_prefix=ids["train"]) == [ids["train"]]
    assert listed(client, id_prefix=ids["foreign"][:8]) == []
    assert set(listed(client, id_prefix=ids["run"][:1])) >= {ids["run"]}


@pytest.mark.parametrize("bad", ["", "ab%", "a_b", "x" * 37, "zz"])
def test_a_bad_id_prefix_is_422(jobs, bad):
    client, _ = jobs
    r = client.get("/jobs", params={"id_prefix": bad})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "id_prefix"]
