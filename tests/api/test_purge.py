"""POST /models/{id}/purge and the tenant setting that purges parents on its own: weights gone from the
artifact store, row, lineage, checksum and audit trail kept, and every use of the weights a 409."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from core import purge
from core.artifacts import get_store
from core.bootstrap import ensure_digits
from core.db import session_scope
from core.tables import AuditEvent, Model
from tests.utils import drain, new_key

TINY = {"name": "tiny", "dataset": "digits", "arch": {"width": 4}, "recipe": {"epochs": 1, "batch_size": 64}}


def _train(client) -> str:
    with session_scope() as session:
        ensure_digits(session)
    r = client.post("/models", json=TINY)
    assert r.status_code == 202, r.text
    assert drain() == 1
    return r.json()["model_id"]


def _unlearn(client, model: str, ids: list[int], name: str | None = None) -> dict:
    body = {"model_id": model, "forget_ids": ids, "method": "none", "name": name}
    r = client.post("/unlearn", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def _model(model_id: str) -> Model:
    with session_scope() as session:
        row = session.get(Model, model_id)
        session.expunge(row)
        return row


def _events(object_id: str) -> list[AuditEvent]:
    with session_scope() as session:
        rows = list(
            session.execute(
                select(AuditEvent).where(AuditEvent.object_id == object_id).order_by(AuditEvent.id)
            ).scalars()
        )
        session.expunge_all()
        return rows


@pytest.fixture
def trained(client) -> str:
    return _train(client)


def test_purge_deletes_the_weights_and_keeps_row_lineage_checksum_and_audit(any_client):
    client = any_client
    trained = _train(client)
    parent = _model(trained)
    store = get_store()
    sha = hashlib.sha256(store.read_bytes(parent.checkpoint)).hexdigest()
    assert parent.checkpoint_sha256 == sha  # recorded when the weights were written
    _unlearn(client, "tiny", [1, 2, 3], name="tiny-forgot")
    drain()
    child = client.get("/models/tiny-forgot").json()
    assert child["status"] == "ready" and child["lineage"] == [child["id"], trained]

    r = client.post("/models/tiny/purge")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == trained and body["status"] == "purged" and body["checkpoint_sha256"] == sha
    assert body["purged_at"] is not None
    assert not store.exists(parent.checkpoint) and not store.path(parent.checkpoint).parent.exists()
    assert store.exists(_model(child["id"]).checkpoint)  # the child keeps its own weights

    shown = client.get("/models/tiny").json()
    assert shown["status"] == "purged" and shown["id"] == trained
    assert client.get("/models/tiny-forgot").json()["lineage"] == [child["id"], trained]
    row = _model(trained)
    assert row.checkpoint_sha256 == sha and row.purged_at is not None
    purged = [e for e in _events(trained) if e.event == "purged"]
    assert len(purged) == 1 and purged[0].detail == {"reason": "requested", "checkpoint_sha256": sha}

    # Every use of the weights is a 409 that says why; the child is still fully usable.
    unlearn = client.post("/unlearn", json={"model_id": "tiny", "forget_ids": [4], "method": "none"})
    assert unlearn.status_code == 409 and "purged" in unlearn.json()["detail"]
    assert "weights were deleted" in unlearn.json()["detail"]
    evaluation = client.post(
        "/evaluations", json={"model_id": "tiny", "forget_ids": [4], "method": "none", "n_models": 1}
    )
    assert evaluation.status_code == 409 and "purged" in evaluation.json()["detail"]
    study = client.post(
        "/studies", json={"model_id": "tiny", "forget_ids": [4], "methods": ["none"], "n_models": 1}
    )
    assert study.status_code == 409 and "purged" in study.json()["detail"]
    again = client.post("/models/tiny/purge")
    assert again.status_code == 409 and "purged" in again.json()["detail"]
    assert _unlearn(client, "tiny-forgot", [4])["job_id"]


def test_purge_is_refused_while_a_job_reads_the_weights_and_for_models_without_any(client, trained):
    queued = _unlearn(client, "tiny", [5])
    busy = client.post(f"/models/{trained}/purge")
    assert busy.status_code == 409 and queued["job_id"] in busy.json()["detail"]
    assert _model(trained).status == "ready" and get_store().exists(_model(trained).checkpoint)
    assert client.post(f"/jobs/{queued['job_id']}/cancel").status_code in (200, 202)
    assert client.post(f"/models/{trained}/purge").status_code == 200

    training = client.post("/models", json={**TINY, "name": "still-training"})
    assert client.post("/models/still-training/purge").status_code == 409
    assert training.status_code == 202
    assert client.post("/models/nothing-of-that-name/purge").status_code == 404
    other = client.post("/models/still-training/purge", headers={"X-API-Key": new_key("other")})
    assert other.status_code == 404


def test_the_weights_are_deleted_only_when_the_purge_commits(client, trained):
    key = _model(trained).checkpoint
    with session_scope() as session:
        purge.purge_model(session, trained, "local")
        session.rollback()
    assert get_store().exists(key) and _model(trained).status == "ready"

    # A purge whose file could not be deleted is retried by purging again.
    with session_scope() as session:
        purge.purge_model(session, trained, "local")
        session.info[purge.PENDING].clear()  # as if the deletion had failed after the commit
    assert get_store().exists(key) and _model(trained).status == "purged"
    retried = client.post(f"/models/{trained}/purge")
    assert retried.status_code == 200 and not get_store().exists(key)
    assert [e.event for e in _events(trained)][-2:] == ["purged", "purge_retried"]


def test_a_tenant_setting_purges_a_parent_once_its_child_is_ready(client, trained):
    assert client.get("/tenant/settings").json() == {"auto_purge_parents": False, "updated_at": None}
    _unlearn(client, "tiny", [1], name="kept-parent")
    drain()
    assert _model(trained).status == "ready"  # off by default

    for bad in ({"auto_purge_parents": "yes"}, {"auto_purge": True}):
        assert client.patch("/tenant/settings", json=bad).status_code == 422
    on = client.patch("/tenant/settings", json={"auto_purge_parents": True})
    assert on.status_code == 200 and on.json()["auto_purge_parents"] is True and on.json()["updated_at"]
    assert client.get("/tenant/settings").json()["auto_purge_parents"] is True
    other = {"X-API-Key": new_key("other")}
    assert client.get("/tenant/settings", headers=other).json()["auto_purge_parents"] is False

    # Two requests against one parent: it is purged only once nothing reads it any more.
    first = _unlearn(client, "tiny", [2], name="first")
    second = _unlearn(client, "tiny", [3], name="second")
    from worker.runner import run_job

    assert run_job(first["job_id"]) == "succeeded"
    assert _model(trained).status == "ready"
    skipped = [e for e in _events(trained) if e.event == "auto_purge_skipped"]
    assert len(skipped) == 1 and second["job_id"] in skipped[0].detail["reason"]
    assert run_job(second["job_id"]) == "succeeded"
    parent = _model(trained)
    assert parent.status == "purged" and not get_store().exists(parent.checkpoint)
    (event,) = [e for e in _events(trained) if e.event == "purged"]
    second_child = client.get("/models/second").json()["id"]
    assert event.detail["reason"] == "auto_purge_parents" and event.detail["child_id"] == second_child
    changed = [e for e in _events("local") if e.event == "settings_changed"]
    assert [e.detail for e in changed] == [{"auto_purge_parents": True}]


def test_the_cli_reads_and_sets_the_tenant_setting(client):
    from cli.main import app

    runner = CliRunner()
    shown = runner.invoke(app, ["tenants", "settings", "acme"])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == {
        "tenant": "acme",
        "auto_purge_parents": False,
    }
    on = runner.invoke(app, ["tenants", "settings", "acme", "--auto-purge-parents"])
    assert on.exit_code == 0 and json.loads(on.stdout)["auto_purge_parents"] is True
    assert client.get("/tenant/settings", headers={"X-API-Key": new_key("acme")}).json()["auto_purge_parents"]
    off = runner.invoke(app, ["tenants", "settings", "acme", "--no-auto-purge-parents"])
    assert json.loads(off.stdout)["auto_purge_parents"] is False


def test_the_dashboard_shows_the_purge_and_purges_from_the_model_page(client, trained):
    from tests.dashboard.test_dashboard import anonymous, sign_in

    sha = _model(trained).checkpoint_sha256
    browser = anonymous(client)
    sign_in(browser, client.headers["X-API-Key"])
    page = browser.get(f"/ui/models/{trained}").text
    csrf = re.search(
        r'<form class="purge[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page
    ).group(1)
    assert "Purge weights" in page
    forged = browser.post(f"/ui/models/{trained}/purge", data={"csrf": "x"}, follow_redirects=False)
    other_site = browser.post(
        f"/ui/models/{trained}/purge",
        data={"csrf": csrf},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert forged.status_code == other_site.status_code == 403 and _model(trained).status == "ready"
    assert client.post(f"/ui/models/{trained}/purge", data={"csrf": csrf}).status_code == 403  # header only

    done = browser.post(f"/ui/models/{trained}/purge", data={"csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/models/{trained}"
    assert _model(trained).status == "purged" and not get_store().exists(_model(trained).checkpoint)
    shown = browser.get(f"/ui/models/{trained}")
    assert shown.status_code == 200 and "status-purged" in shown.text and "Purge weights" not in shown.text
    assert 'id="purged"' in shown.text and "Weights purged" in shown.text and sha in shown.text
    again = browser.post(f"/ui/models/{trained}/purge", data={"csrf": csrf}, follow_redirects=False)
    assert again.status_code == 409 and "already" not in again.text and "was purged" in again.text


def test_a_job_that_finds_its_model_purged_fails_saying_so(client, trained):
    """A purge that raced a request past its check: the job fails with the reason, not a missing file."""
    queued = _unlearn(client, "tiny", [6])
    with session_scope() as session:
        purge._purge(session, session.get(Model, trained), reason="requested")
    from worker.runner import run_job

    assert run_job(queued["job_id"]) == "failed"
    job = client.get(f"/jobs/{queued['job_id']}").json()
    assert "was purged" in job["error"] and "weights were deleted" in job["error"]
