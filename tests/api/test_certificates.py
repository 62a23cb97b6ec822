"""Deletion certificates (signed, checkable offline, tamper-evident, showing the purge) and the audit export."""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import io
import json
import stat
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from core import certificates, idsets
from core.artifacts import get_store
from core.bootstrap import ensure_digits
from core.db import session_scope
from core.tables import Model
from tests.utils import configure, drain, new_key

FORGET = [3, 17, 42]
TINY = {"name": "tiny", "dataset": "digits", "arch": {"width": 4}, "recipe": {"epochs": 1, "batch_size": 64}}


def _fulfilled(client: TestClient, *, evaluate: bool) -> dict[str, str]:
    """A trained "tiny", a fulfilled request on it (child "tiny-forgot") and, if asked, a scored evaluation."""
    with session_scope() as session:
        ensure_digits(session)
    parent = client.post("/models", json=TINY).json()["model_id"]
    drain()
    body = {
        "model_id": "tiny",
        "forget_ids": FORGET,
        "method": "none",
        "name": "tiny-forgot",
        "requested_by": "privacy@example.com",
    }
    request_id = client.post("/unlearn", json=body).json()["forget_request_id"]
    evaluation_id = None
    if evaluate:
        ev = {"model_id": "tiny", "forget_ids": FORGET, "method": "none", "n_models": 2}
        evaluation_id = client.post("/evaluations", json=ev).json()["evaluation_id"]
    drain()
    child = client.get(f"/forget-requests/{request_id}").json()["result_model_id"]
    assert child
    return {"parent": parent, "child": child, "request": request_id, "evaluation": evaluation_id}


def _file_sha(model_id: str) -> str:
    with session_scope() as session:
        key = session.get(Model, model_id).checkpoint
    return hashlib.sha256(get_store().read_bytes(key)).hexdigest()


def _independent_check(document: dict, public: dict) -> None:
    """The documented recipe, with cryptography alone: canonical JSON of all but the signature."""
    body = {k: v for k, v in document.items() if k != "signature"}
    signed = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public["public_key"]))
    key.verify(base64.b64decode(document["signature"]["value"]), signed)  # raises if it does not hold


def test_a_certificate_is_signed_complete_and_any_change_breaks_it(any_client, tmp_path):
    client = any_client
    ids = _fulfilled(client, evaluate=True)
    r = client.get(f"/forget-requests/{ids['request']}/certificate")
    assert r.status_code == 200, r.text
    cert = r.json()
    public = TestClient(client.app).get("/certificates/public-key").json()  # no API key needed
    assert public["algorithm"] == "Ed25519" and public["pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert certificates.verify(cert) == public["key_id"] == cert["signature"]["key_id"]
    _independent_check(cert, public)

    request = cert["forget_request"]
    assert request["id"] == ids["request"] and request["n_ids"] == 3
    assert request["ids_sha256"] == idsets.sha256(FORGET) == hashlib.sha256(b"3,17,42").hexdigest()
    assert request["requested_by"] == "privacy@example.com"
    assert datetime.fromisoformat(request["received_at"]).tzinfo is not None
    assert cert["method"]["name"] == "none" and cert["method"]["params"] == {}
    assert cert["parent_model"]["id"] == ids["parent"] and cert["result_model"]["id"] == ids["child"]
    assert cert["parent_model"]["checkpoint_sha256"] == _file_sha(ids["parent"])
    assert cert["result_model"]["checkpoint_sha256"] == _file_sha(ids["child"])
    assert cert["result_model"]["n_forgotten"] == 3 and cert["parent_purged"] is False
    assert cert["metrics"] == client.get(f"/models/{ids['child']}").json()["metrics"]
    events = [(e["object_type"], e["event"]) for e in cert["timeline"]]
    for expected in (
        ("forget_request", "received"),
        ("job", "queued"),
        ("job", "running"),
        ("job", "succeeded"),
        ("model", "ready"),
        ("forget_request", "fulfilled"),
    ):
        assert expected in events, expected
    times = [e["at"] for e in cert["timeline"]]
    assert times == sorted(times)

    evaluation = client.get(f"/evaluations/{ids['evaluation']}").json()
    shown = cert["evaluation"]
    assert shown["id"] == ids["evaluation"] and shown["n_models"] == 2 and shown["same_params"] is True
    assert shown["epsilon_hat"] == evaluation["results"]["epsilon_hat"]
    assert "epsilon-hat" in shown["meaning"] and "retrained without the samples" in shown["meaning"]

    # Any change to any field, or a signature from another key, fails verification.
    for path, value in (
        (("forget_request", "n_ids"), 2),
        (("parent_purged",), True),
        (("result_model", "checkpoint_sha256"), "0" * 64),
        (("timeline",), cert["timeline"][:-1]),
    ):
        forged = copy.deepcopy(cert)
        target = forged
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        with pytest.raises(certificates.VerificationError, match="modified"):
            certificates.verify(forged)
    stranger = Ed25519PrivateKey.generate()
    resigned = copy.deepcopy(cert)
    body = {k: v for k, v in resigned.items() if k != "signature"}
    raw = stranger.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    resigned["signature"] = {
        **cert["signature"],
        "public_key": base64.b64encode(raw).decode(),
        "value": base64.b64encode(stranger.sign(certificates.canonical(body))).decode(),
    }
    certificates.verify(resigned)  # intact, but by another key:
    trusted = certificates.load_public_key(json.dumps(public))
    with pytest.raises(certificates.VerificationError, match="not by the trusted key"):
        certificates.verify(resigned, trusted)

    # Offline, from files, with the CLI.
    from cli.main import app

    runner = CliRunner()
    good, bad, key_file = tmp_path / "cert.json", tmp_path / "forged.json", tmp_path / "key.json"
    good.write_text(r.text)
    key_file.write_text(json.dumps(public))
    forged = copy.deepcopy(cert)
    forged["forget_request"]["requested_by"] = "someone@else.example"
    bad.write_text(json.dumps(forged))
    ok = runner.invoke(app, ["certificate", "verify", str(good), "--public-key", str(key_file)])
    assert ok.exit_code == 0 and f"valid: signed by key {public['key_id']} (the trusted key)" in ok.stdout
    assert "parent purged: no" in ok.stdout
    pem = tmp_path / "key.pem"
    pem.write_text(public["pem"])
    assert runner.invoke(app, ["certificate", "verify", str(good), "--public-key", str(pem)]).exit_code == 0
    failed = runner.invoke(app, ["certificate", "verify", str(bad), "--public-key", str(key_file)])
    assert failed.exit_code == 1 and "INVALID" in failed.stdout and "modified" in failed.stdout
    other = tmp_path / "other.json"
    other.write_text(json.dumps(resigned))
    assert runner.invoke(app, ["certificate", "verify", str(other), "--public-key", str(pem)]).exit_code == 1
    assert runner.invoke(app, ["certificate", "verify", str(other)]).exit_code == 0
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert runner.invoke(app, ["certificate", "verify", str(garbage)]).exit_code == 2


def test_the_certificate_shows_the_purge_and_waits_for_fulfilment(client):
    ids = _fulfilled(client, evaluate=False)
    before = client.get(f"/forget-requests/{ids['request']}/certificate").json()
    assert before["evaluation"] is None and before["parent_purged"] is False
    assert client.post(f"/models/{ids['parent']}/purge").status_code == 200
    after = client.get(f"/forget-requests/{ids['request']}/certificate").json()
    certificates.verify(after)
    assert after["parent_purged"] is True and after["parent_model"]["status"] == "purged"
    assert after["parent_model"]["purged_at"] is not None
    assert after["parent_model"]["checkpoint_sha256"] == before["parent_model"]["checkpoint_sha256"]
    purge_events = [e for e in after["timeline"] if e["object_id"] == ids["parent"]]
    assert [e["event"] for e in purge_events] == ["purged"]
    assert after["signature"]["key_id"] == before["signature"]["key_id"]  # one key, generated once

    pending = client.post("/unlearn", json={"model_id": "tiny-forgot", "forget_ids": [5], "method": "none"})
    waiting = client.get(f"/forget-requests/{pending.json()['forget_request_id']}/certificate")
    assert waiting.status_code == 409 and "queued" in waiting.json()["detail"]
    other = client.get(
        f"/forget-requests/{ids['request']}/certificate", headers={"X-API-Key": new_key("other")}
    )
    assert other.status_code == 404
    assert client.get("/forget-requests/nothing/certificate").status_code == 404


def test_the_signing_key_is_made_once_and_a_configured_one_is_used(pg_env, tmp_path, monkeypatch):
    first = certificates.public_key_info()
    path = get_store().path(certificates.KEY_ARTIFACT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert certificates.public_key_info() == first
    mine = Ed25519PrivateKey.generate()
    pem = tmp_path / "signing.pem"
    pem.write_bytes(
        mine.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    configure(monkeypatch, home=tmp_path / "home", signing_key_file=pem, **_db(pg_env))
    assert certificates.public_key_info()["key_id"] == certificates.key_id(mine.public_key())
    signed = certificates.sign({"certificate": "test", "n": 1.5, "bad": float("inf")})
    assert signed["bad"] == "inf"
    assert certificates.verify(signed, mine.public_key()) == certificates.key_id(mine.public_key())


def _db(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("LETHE_").lower(): v for k, v in env.items() if k != "LETHE_HOME"}


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_the_audit_trail_exports_as_json_lines_or_csv_by_time_and_page(any_client):
    client = any_client
    with session_scope() as session:
        ensure_digits(session)
    client.post("/models", json=TINY)
    drain()
    client.post("/unlearn", json={"model_id": "tiny", "forget_ids": FORGET, "method": "none"})
    drain()
    everything = client.get("/audit")
    assert everything.status_code == 200 and everything.headers["content-type"] == "application/x-ndjson"
    rows = _jsonl(everything.text)
    assert len(rows) >= 10 and [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert {r["tenant"] for r in rows} == {"local"} and "X-Next-Cursor" not in everything.headers
    assert {"received", "fulfilled", "ready", "succeeded"} <= {r["event"] for r in rows}

    # Pages: every event once, in order, following the cursor.
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/audit", params=params)
        seen += _jsonl(page.text)
        pages += 1
        cursor = page.headers.get("x-next-cursor")
        if cursor is None:
            break
        assert 'rel="next"' in page.headers["link"] and f"cursor={cursor}" in page.headers["link"]
    assert seen == rows and pages >= len(rows) // 3

    # CSV by Accept or by ?format=, the same events.
    for response in (client.get("/audit", headers={"Accept": "text/csv"}), client.get("/audit?format=csv")):
        assert response.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(response.text)))
        assert [int(t["id"]) for t in table] == [r["id"] for r in rows]
        assert json.loads(table[0]["detail"]) == rows[0]["detail"]

    # By time range (RFC 3339 with its zone), and by object type.
    middle = datetime.fromisoformat(rows[len(rows) // 2]["at"])
    later = _jsonl(client.get("/audit", params={"since": middle.isoformat()}).text)
    earlier = _jsonl(client.get("/audit", params={"until": middle.isoformat()}).text)
    assert later and all(datetime.fromisoformat(r["at"]) >= middle for r in later)
    assert all(datetime.fromisoformat(r["at"]) < middle for r in earlier)
    assert len(later) + len(earlier) == len(rows)
    zulu = middle.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    assert _jsonl(client.get("/audit", params={"since": zulu}).text) == later
    shifted = middle.astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert _jsonl(client.get("/audit", params={"since": shifted}).text) == later
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert client.get("/audit", params={"since": future}).text == ""
    requests = _jsonl(client.get("/audit", params={"object_type": "forget_request"}).text)
    assert requests and {r["object_type"] for r in requests} == {"forget_request"}

    naive = middle.astimezone(UTC).replace(tzinfo=None).isoformat()
    for bad in (
        {"format": "xml"},
        {"cursor": "abc"},
        {"cursor": ""},
        {"limit": 0},
        {"since": "yesterday"},
        {"until": "0.5"},
        {"since": naive},
    ):
        assert client.get("/audit", params=bad).status_code == 422, bad
    theirs = _jsonl(client.get("/audit", headers={"X-API-Key": new_key("other")}).text)
    assert {r["tenant"] for r in theirs} == {"other"} and not {r["id"] for r in theirs} & {
        r["id"] for r in rows
    }


def test_the_dashboard_prints_the_same_certificate(client):
    from tests.dashboard.test_dashboard import anonymous, sign_in

    ids = _fulfilled(client, evaluate=False)
    request_page = client.get(f"/ui/forget-requests/{ids['request']}")
    assert f'href="/ui/forget-requests/{ids["request"]}/certificate"' in request_page.text
    api = client.get(f"/forget-requests/{ids['request']}/certificate").json()
    browser = anonymous(client)
    assert browser.get(f"/ui/forget-requests/{ids['request']}/certificate").status_code == 401
    sign_in(browser, client.headers["X-API-Key"])
    page = browser.get(f"/ui/forget-requests/{ids['request']}/certificate")
    assert page.status_code == 200 and "@media print" in page.text
    for shown in (
        api["forget_request"]["ids_sha256"],
        api["parent_model"]["checkpoint_sha256"],
        api["result_model"]["checkpoint_sha256"],
        api["signature"]["key_id"],
        "privacy@example.com",
        "have <strong>not been purged</strong>",
    ):
        assert shown in page.text, shown
    timeline = page.text.split('id="certificate-timeline">')[1].split("</tbody>")[0]
    assert timeline.count("<tr>") == len(api["timeline"])
    download = browser.get(f"/ui/forget-requests/{ids['request']}/certificate.json")
    assert download.status_code == 200
    document = download.json()
    assert certificates.verify(document) == api["signature"]["key_id"]
    assert {k: v for k, v in document.items() if k not in ("issued_at", "signature")} == {
        k: v for k, v in api.items() if k not in ("issued_at", "signature")
    }
    assert client.post(f"/models/{ids['parent']}/purge").status_code == 200
    assert (
        "were <strong>purged</strong>"
        in browser.get(f"/ui/forget-requests/{ids['request']}/certificate").text
    )
    pending = client.post("/unlearn", json={"model_id": "tiny-forgot", "forget_ids": [5], "method": "none"})
    not_yet = browser.get(f"/ui/forget-requests/{pending.json()['forget_request_id']}/certificate")
    assert not_yet.status_code == 409 and "once it is fulfilled" in not_yet.text
