"""Keys, tenants, cancel, idempotency, limits and the audit trail, on real Postgres and Redis."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.tables import ApiKey, AuditEvent, Job
from tests.utils import add_ready_model, new_key, reset_caches

ID_ROUTES_GET = [
    "/models/{model}",
    "/jobs/{job}",
    "/jobs/{job}/metrics",
    "/forget-requests/{request}",
    "/evaluations/{evaluation}",
    "/evaluations/{evaluation}/plots/histograms.png",
    "/references/{reference_set}",
    "/studies/{study}",
    "/studies/{study}/export",
]


@pytest.fixture
def owned(client) -> dict[str, str]:
    """One object of every kind, owned by the tenant "local"."""
    with session_scope() as session:
        add_ready_model(session, "m1")
    unlearn = client.post("/unlearn", json={"model_id": "m1", "forget_ids": [1, 2], "method": "none"}).json()
    evaluation = client.post(
        "/evaluations", json={"model_id": "m1", "forget_ids": [1, 2], "method": "none", "n_models": 1}
    ).json()
    study = client.post(
        "/studies", json={"model_id": "m1", "forget_ids": [3], "methods": ["none"], "n_models": 1}
    ).json()
    ev = client.get(f"/evaluations/{evaluation['evaluation_id']}").json()
    return {
        "model": "m1",
        "job": unlearn["job_id"],
        "request": unlearn["forget_request_id"],
        "evaluation": evaluation["evaluation_id"],
        "reference_set": ev["reference_set_id"],
        "study": study["study_id"],
    }


def test_every_endpoint_but_health_needs_a_key(client, owned):
    anonymous = {"X-API-Key": ""}
    for template in ID_ROUTES_GET:
        r = client.get(template.format(**owned), headers=anonymous)
        assert r.status_code == 401, template
        assert client.get(template.format(**owned), headers={"X-API-Key": "lethe_wrong"}).status_code == 401
    assert client.post("/unlearn", json={}, headers=anonymous).status_code == 401
    assert client.get("/methods", headers=anonymous).status_code == 401
    assert client.get("/health", headers=anonymous).status_code == 200
    assert client.get("/models", headers=anonymous).json()["detail"].startswith("missing API key")


def test_another_tenant_sees_none_of_it(client, owned):
    other = {"X-API-Key": new_key("other")}
    for template in ID_ROUTES_GET:
        r = client.get(template.format(**owned), headers=other)
        assert r.status_code == 404, (template, r.status_code)
    assert client.post(f"/jobs/{owned['job']}/cancel", headers=other).status_code == 404
    assert client.get("/models", headers=other).json() == {"data": [], "count": 0, "next_cursor": None}
    assert client.get("/evaluations", headers=other).json()["count"] == 0
    body = {"model_id": "m1", "forget_ids": [1], "method": "none"}
    assert client.post("/unlearn", json=body, headers=other).status_code == 404
    assert client.post("/evaluations", json={**body, "n_models": 1}, headers=other).status_code == 404
    refs = {"model_id": "m1", "forget_ids": [1], "n_models": 1}
    assert client.post("/references", json=refs, headers=other).status_code == 404
    # The owner still sees everything.
    for template in ("/models/{model}", "/jobs/{job}", "/forget-requests/{request}", "/studies/{study}"):
        assert client.get(template.format(**owned)).status_code == 200


def test_another_tenant_cannot_use_the_ids_of_ones_objects(client, owned):
    """By id, not only by name: another tenant's model and data set ids are unknown in every endpoint."""
    other = {"X-API-Key": new_key("other")}
    model_id = client.get("/models/m1").json()["id"]
    dataset_id = next(d["id"] for d in client.get("/datasets").json()["data"] if d["name"] == "digits")
    assert client.get(f"/models/{model_id}", headers=other).status_code == 404
    for path, body in (
        ("/unlearn", {"model_id": model_id, "forget_ids": [1], "method": "none"}),
        ("/evaluations", {"model_id": model_id, "forget_ids": [1], "method": "none", "n_models": 1}),
        ("/references", {"model_id": model_id, "forget_ids": [1], "n_models": 1}),
        ("/studies", {"model_id": model_id, "forget_ids": [1], "methods": ["none"], "n_models": 1}),
        ("/studies", {"model_id": "m1", "forget_ids": [1], "methods": ["none"], "n_models": 1}),
        ("/models", {"dataset": dataset_id, "arch": {"width": 4}, "recipe": {"epochs": 1}}),
    ):
        r = client.post(path, json=body, headers=other)
        assert r.status_code == 404, (path, body, r.status_code, r.text)
    for query in ({"reference_set_id": owned["reference_set"]}, {"study_id": owned["study"]}):
        assert client.get("/evaluations", params=query, headers=other).json()["count"] == 0
        assert client.get("/evaluations", params=query).json()["count"] >= 1


def test_cancel_queued_job_and_fanout_children(client, owned):
    r = client.post(f"/jobs/{owned['job']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{owned['job']}/cancel").status_code == 409
    ev = client.get(f"/evaluations/{owned['evaluation']}").json()
    assert client.post(f"/jobs/{ev['job_id']}/cancel").json()["status"] == "cancelled"
    with session_scope() as session:
        children = session.execute(select(Job.status).where(Job.parent_id == ev["job_id"])).scalars().all()
    assert children and set(children) == {"cancelled"}
    trail = client.get(f"/forget-requests/{owned['request']}").json()
    assert trail["status"] == "cancelled"
    assert [e["event"] for e in trail["events"]] == ["received", "queued", "cancelled"]


def test_idempotency_key_replays_and_refuses_another_body(client, owned):
    body = {"model_id": "m1", "forget_ids": [7, 8], "method": "none"}
    key = {"Idempotency-Key": "req-42"}
    first = client.post("/unlearn", json=body, headers=key)
    again = client.post("/unlearn", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    with session_scope() as session:
        assert (
            session.execute(select(func.count()).select_from(Job).where(Job.kind == "unlearn")).scalar_one()
            == 2
        )
    clash = client.post("/unlearn", json={**body, "forget_ids": [9]}, headers=key)
    assert clash.status_code == 409 and "req-42" in clash.json()["detail"]
    # Keys belong to a tenant: another tenant's same key is its own request.
    other = client.post("/unlearn", json=body, headers={**key, "X-API-Key": new_key("other")})
    assert other.status_code == 404


def test_forget_set_size_limit(client, owned, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("LETHE_MAX_FORGET_IDS", "3")
    get_settings.cache_clear()
    r = client.post("/unlearn", json={"model_id": "m1", "forget_ids": [1, 2, 3, 4], "method": "none"})
    assert r.status_code == 422 and "at most 3" in r.json()["detail"][0]["msg"]


def test_forget_request_trail_shows_who_what_and_when(client, owned):
    trail = client.get(f"/forget-requests/{owned['request']}").json()
    assert trail["tenant"] == "local" and trail["n_ids"] == 2 and len(trail["ids_sha256"]) == 64
    assert trail["status"] == "queued" and trail["result_model_id"] is None
    assert [e["event"] for e in trail["events"]] == ["received", "queued"]
    assert all(e["at"] for e in trail["events"])


def test_lethe_keys_create_prints_a_working_key(client):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["keys", "create", "--tenant", "acme"])
    assert result.exit_code == 0
    key = result.stdout.strip()
    assert key.startswith("lethe_") and len(key) > 40
    assert client.get("/models", headers={"X-API-Key": key}).status_code == 200
    with session_scope() as session:
        stored = session.execute(select(ApiKey.key_sha256).where(ApiKey.tenant_id == "acme")).scalars().all()
    assert stored and key not in stored and all(len(s) == 64 for s in stored)
    bad = CliRunner().invoke(app, ["keys", "create", "--tenant", "no spaces"])
    assert bad.exit_code == 2 and "tenant names" in bad.output


def test_lethe_keys_list_and_revoke(client, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("LETHE_AUTH_CACHE_SECONDS", "0")  # no cached check: the refusal is immediate
    reset_caches()
    runner = CliRunner()
    first, second = (
        runner.invoke(app, ["keys", "create", "--tenant", "acme"]).stdout.strip() for _ in range(2)
    )
    listed = runner.invoke(app, ["keys", "list", "--tenant", "acme", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["prefix"] for r in rows] == [first[:10], second[:10]] and all(
        r["revoked_at"] is None for r in rows
    )
    assert first not in listed.stdout and second not in listed.stdout  # secrets are never shown
    assert client.get("/models", headers={"X-API-Key": first}).status_code == 200

    revoked = runner.invoke(app, ["keys", "revoke", first])
    assert revoked.exit_code == 0 and first[:10] in revoked.stdout and "acme" in revoked.stdout
    assert client.get("/models", headers={"X-API-Key": first}).status_code == 401
    assert client.get("/models", headers={"X-API-Key": second}).status_code == 200
    again = runner.invoke(app, ["keys", "revoke", first[:10]])
    assert again.exit_code == 2 and "already revoked" in again.output
    missing = runner.invoke(app, ["keys", "revoke", "lethe_zzzz"])
    assert missing.exit_code == 2 and "no API key" in missing.output
    plain = runner.invoke(app, ["keys", "list", "--tenant", "acme"])
    assert "revoked" in plain.stdout.splitlines()[0] and "active" in plain.stdout.splitlines()[1]
    with session_scope() as session:
        events = (
            session.execute(
                select(AuditEvent.event).where(
                    AuditEvent.object_type == "api_key", AuditEvent.tenant_id == "acme"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(events) == ["created", "created", "revoked"]
