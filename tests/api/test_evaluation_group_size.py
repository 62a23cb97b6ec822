"""POST /evaluations picks the models per group from the target resolution and warns when they are too few."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.group_size import plan_n_models
from core.settings import get_settings
from core.tables import Evaluation, Job
from ml.metrics.epsilon import epsilon_ceiling
from tests.utils import add_ready_model

FORGET = [1, 2, 3, 4, 5]


@pytest.fixture
def model(client):
    with session_scope() as session:
        return add_ready_model(session, "m1").id


def _evaluate(client, **extra):
    r = client.post("/evaluations", json={"model_id": "m1", "forget_ids": FORGET, "method": "none", **extra})
    assert r.status_code == 202, r.text
    return r.json()


def _unlearn_runs(evaluation_id: str) -> int:
    with session_scope() as session:
        ev = session.get(Evaluation, evaluation_id)
        return session.execute(
            select(func.count()).select_from(Job).where(Job.kind == "unlearn_run", Job.parent_id == ev.job_id)
        ).scalar_one()


def test_without_n_models_the_target_resolution_decides(client, model):
    body = _evaluate(client)
    assert (body["n_models"], body["warnings"]) == (8, [])  # 8 models: ceiling 1.887 >= the default 1.8
    assert _unlearn_runs(body["evaluation_id"]) == 8


def test_a_higher_target_needs_more_models(client, model, monkeypatch):
    monkeypatch.setenv("LETHE_TARGET_EPSILON_CEILING", "3.0")
    get_settings.cache_clear()
    body = _evaluate(client, delta=0.05)
    assert body["n_models"] == 23 and body["warnings"] == []
    assert epsilon_ceiling(23, 23) >= 3.0 > epsilon_ceiling(22, 22)
    with session_scope() as session:
        assert session.get(Evaluation, body["evaluation_id"]).n_models == 23


def test_too_few_models_are_warned_about(client, model):
    body = _evaluate(client, n_models=3)
    assert body["n_models"] == 3 and len(body["warnings"]) == 2
    assert "cannot tell the method from retrain; use at least 5 models per group" in body["warnings"][0]
    assert "only up to 0.615" in body["warnings"][1] and "8 models per group reach it" in body["warnings"][1]
    body = _evaluate(client, n_models=6)
    assert len(body["warnings"]) == 1 and "only up to 1.548" in body["warnings"][0]
    assert _evaluate(client, n_models=12)["warnings"] == []


def test_bad_n_models_is_still_422(client, model):
    for bad in (0, 513, "many"):
        r = client.post(
            "/evaluations", json={"model_id": "m1", "forget_ids": FORGET, "method": "none", "n_models": bad}
        )
        assert r.status_code == 422


def test_plan_without_a_server():
    assert plan_n_models(None, 0.05, 4.317) == (80, [])
    n, warnings = plan_n_models(4, 0.05, 1.8)
    assert n == 4 and "cannot tell the method from retrain" in warnings[0]
    assert plan_n_models(5, 0.05, 1.0) == (5, [])  # retrain against retrain is not censored from 5 on
    n, warnings = plan_n_models(None, 0.05, 40.0)
    assert n == 512 and "no allowed group size reaches it" in warnings[0]
