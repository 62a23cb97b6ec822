"""Per-tenant limits on queued work (429 with Retry-After, or 422 for a request that can never fit) and
fan-outs that insert their runs in one batch."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from core.db import get_engine, session_scope
from core.tables import Job
from tests.utils import add_ready_model, new_key, reset_caches


@pytest.fixture
def m1(any_client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    return any_client


def _jobs() -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(Job)).scalar_one()


def test_active_jobs_per_tenant_are_limited(m1, monkeypatch):
    monkeypatch.setenv("LETHE_TENANT_MAX_ACTIVE_JOBS", "2")
    monkeypatch.setenv("LETHE_TENANT_RETRY_AFTER_SECONDS", "17")
    from core.settings import get_settings

    get_settings.cache_clear()
    body = {"model_id": "m1", "method": "none"}
    assert [m1.post("/unlearn", json={**body, "forget_ids": [i]}).status_code for i in range(2)] == [202, 202]
    refused = m1.post("/unlearn", json={**body, "forget_ids": [9]})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "17"
    assert "2" in refused.json()["detail"] and _jobs() == 2
    assert m1.post("/evaluations", json={**body, "forget_ids": [9], "n_models": 1}).status_code == 429
    # Another tenant has its own budget, and a finished job frees a place.
    with session_scope() as session:
        add_ready_model(session, "m2").tenant_id = "other"
    other = m1.post(
        "/unlearn",
        json={**body, "model_id": "m2", "forget_ids": [9]},
        headers={"X-API-Key": new_key("other")},
    )
    assert other.status_code == 202
    first = m1.get("/jobs", params={"limit": 1}).json()["data"][0]["id"]
    m1.post(f"/jobs/{first}/cancel")
    assert m1.post("/unlearn", json={**body, "forget_ids": [9]}).status_code == 202


def test_queued_runs_per_tenant_are_limited(m1, monkeypatch):
    monkeypatch.setenv("LETHE_TENANT_MAX_QUEUED_RUNS", "10")
    reset_caches()
    body = {"model_id": "m1", "forget_ids": [1], "method": "none"}
    too_big = m1.post("/evaluations", json={**body, "n_models": 6})  # 6 reference + 6 unlearned runs
    assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"] == ["body", "n_models"]
    assert m1.post("/evaluations", json={**body, "n_models": 4}).status_code == 202  # 8 runs
    full = m1.post("/evaluations", json={**body, "forget_ids": [2], "n_models": 2})  # 4 more
    assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
    assert (
        m1.post("/studies", json={"model_id": "m1", "forget_ids": [3], "methods": ["none"]}).status_code
        == 422
    )


def test_a_large_fan_out_inserts_its_runs_in_a_few_statements(m1):
    statements = []

    def count(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
            statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        r = m1.post(
            "/evaluations", json={"model_id": "m1", "forget_ids": [1], "method": "none", "n_models": 203}
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert r.status_code == 202
    from core.evaluations import pack_size

    # The evaluation, 203 unlearned runs, and the 203 reference models in packs of pack_size() per job.
    assert _jobs() == 1 + 203 + -(-203 // pack_size())
    assert len(statements) <= 6, len(statements)
