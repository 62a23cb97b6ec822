"""Signing in to the dashboard: the key is POSTed once, the browser keeps a hashed server-side session, and
no key reaches a URL or a log line."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import uvicorn
from sqlalchemy import select, update

from api.redact import redact
from core.auth import digest, revoke_key
from core.db import session_scope
from core.tables import AuditEvent, DashboardSession, utcnow
from tests.dashboard.test_dashboard import anonymous, sign_in
from tests.e2e.stack import free_port
from tests.utils import new_key


def _sessions() -> list[DashboardSession]:
    with session_scope() as session:
        rows = list(session.execute(select(DashboardSession)).scalars())
        session.expunge_all()
        return rows


def _token(response: httpx.Response) -> str:
    return re.match(r"lethe_session=([^;]+);", response.headers["set-cookie"]).group(1)


def test_the_session_is_stored_hashed_and_ends_on_sign_out_expiry_and_revocation(any_client):
    client = any_client
    key = client.headers["X-API-Key"]
    browser = anonymous(client)
    token = _token(sign_in(browser, key))
    (row,) = _sessions()
    assert row.token_sha256 == digest(token) and row.tenant_id == "local" and row.ended_at is None
    assert timedelta(hours=11.9) < row.expires_at - row.created_at <= timedelta(hours=12)
    assert browser.get("/").status_code == 200

    # A copy of the cookie is as good as the browser's until the session ends; sign-out ends it for both.
    copy = anonymous(client)
    copy.cookies.set("lethe_session", token)
    assert copy.get("/").status_code == 200
    home = browser.get("/").text
    csrf = re.search(r'action="/ui/logout"><input type="hidden" name="csrf" value="([^"]+)"', home).group(1)
    refused = browser.post("/ui/logout", data={"csrf": "forged"}, follow_redirects=False)
    assert refused.status_code == 403 and browser.get("/").status_code == 200
    out = browser.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and 'lethe_session=""' in out.headers["set-cookie"]
    assert browser.get("/").status_code == 401
    ended = copy.get("/")
    assert ended.status_code == 401 and "session has ended" in ended.text
    (row,) = _sessions()
    assert row.ended_at is not None

    # Expired: the form again, though nobody signed out.
    browser = anonymous(client)
    token = _token(sign_in(browser, key))
    with session_scope() as session:
        session.execute(
            update(DashboardSession)
            .where(DashboardSession.token_sha256 == digest(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert browser.get("/").status_code == 401
    assert browser.get("/ui/jobs.json").status_code == 401

    # Revoking the key ends every session it opened, at once (no cache in between).
    first, second = anonymous(client), anonymous(client)
    sign_in(first, key)
    sign_in(second, key)
    assert first.get("/").status_code == 200 and second.get("/").status_code == 200
    with session_scope() as session:
        revoke_key(session, key)
    assert first.get("/").status_code == 401 and second.get("/ui/jobs.json").status_code == 401
    assert all(r.ended_at is not None for r in _sessions())
    with session_scope() as session:
        events = [e for (e,) in session.execute(select(AuditEvent.event)).all()]
    assert events.count("signed_in") == 4 and events.count("signed_out") == 1


def test_the_sign_in_form_is_refused_without_its_csrf_token_or_from_another_site(client):
    key = client.headers["X-API-Key"]
    browser = anonymous(client)
    form = browser.get("/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert browser.cookies.get("lethe_csrf") == csrf

    # A page of another site can submit the form, but neither read the token nor send the cookie.
    forged = anonymous(client)
    for attempt in (
        forged.post("/ui/login", data={"key": key}, follow_redirects=False),
        forged.post("/ui/login", data={"key": key, "csrf": csrf}, follow_redirects=False),
        browser.post("/ui/login", data={"key": key, "csrf": "x" + csrf}, follow_redirects=False),
        browser.post(
            "/ui/login",
            data={"key": key, "csrf": csrf},
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        ),
        browser.post(
            "/ui/login", data={"key": key, "csrf": csrf}, headers={"Origin": "null"}, follow_redirects=False
        ),
    ):
        assert attempt.status_code == 403 and "another site" in attempt.text
        assert "lethe_session" not in attempt.headers.get("set-cookie", "")
    assert _sessions() == []

    # After a sign-in the form leads back to the page that asked for it, and never off the site.
    fresh = anonymous(client)
    assert sign_in(fresh, key, next_page="/ui/models/tiny").headers["location"] == "/ui/models/tiny"
    for where in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        other = anonymous(client)
        token = re.search(r'name="csrf" value="([^"]+)"', other.get("/").text).group(1)
        off_site = other.post(
            "/ui/login", data={"key": key, "csrf": token, "next": where}, follow_redirects=False
        )
        assert off_site.status_code == 303 and off_site.headers["location"] == "/", where


class Collect(logging.Handler):
    """Every formatted log line of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def served_with_access_log() -> Iterator[tuple[str, Collect]]:
    """The app under uvicorn with its access log on, every log line of the process collected."""
    from api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="info"))
    collect = Collect()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(collect)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", collect
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for logger in loggers:
            logger.removeHandler(collect)


def test_no_key_reaches_a_url_or_a_log_line(pg_env, capfd):
    key = new_key("local")
    urls: list[str] = []
    with served_with_access_log() as (base, collect):
        with httpx.Client(base_url=base, event_hooks={"request": [lambda r: urls.append(str(r.url))]}) as web:
            form = web.get("/")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            signed = web.post(
                "/ui/login", data={"key": key, "csrf": csrf, "next": "/"}, follow_redirects=True
            )
            assert signed.status_code == 200 and "Overview" in signed.text
            assert [r.headers["location"] for r in signed.history] == ["/"]
            for path in ("/", "/ui/jobs.json", "/ui/models/nothing"):
                page = web.get(path)
                assert key not in page.text
                for link in re.findall(r'(?:href|src|action)="([^"]*)"', page.text):
                    assert key not in link
            # The key travels as a header to the API, and the access log writes the path only.
            assert web.get("/jobs", headers={"X-API-Key": key}).status_code == 200
            assert web.get("/jobs", headers={"X-API-Key": key + "x"}).status_code == 401
            assert all(key not in url for url in urls), urls
            # A client that still puts the key in the address is refused, and the log line is redacted.
            old = web.get("/", params={"key": key})
            assert old.status_code == 400
        deadline = time.monotonic() + 10
        while not any("/ui/login" in line for line in collect.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    access = [line for line in collect.lines if '"GET ' in line or '"POST ' in line]
    assert any('"POST /ui/login HTTP/1.1" 303' in line for line in access), access
    assert any("/?key=[redacted]" in line for line in access), access
    captured = capfd.readouterr()
    for text in (*collect.lines, captured.out, captured.err):
        assert key not in text
        assert key[len("lethe_") :] not in text


def test_redaction_covers_keys_anywhere_in_a_line():
    assert redact("GET /?key=lethe_abcdEFGH123-_x&x=1 HTTP/1.1") == "GET /?key=[redacted]&x=1 HTTP/1.1"
    assert redact("token lethe_abcdEFGH123 seen") == "token lethe_[redacted] seen"
    assert redact("/ui/models/tiny?api_key=secret") == "/ui/models/tiny?api_key=[redacted]"
    assert redact("nothing to hide") == "nothing to hide"


@pytest.fixture(autouse=True)
def _no_leftover_server() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == "uvicorn" and t.is_alive()]


def test_the_pages_follow_jobs_as_server_sent_events(client):
    """The dashboard's live progress: the jobs of /ui/jobs.json as an event stream, for signed-in browsers only."""
    from tests.dashboard.test_dashboard import anonymous, anonymous_with_cookie

    browser = anonymous_with_cookie(client)
    r = browser.get(
        "/ui/jobs/events"
    )  # nothing runs: one event, then the stream ends for the browser to retry
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [block for block in r.text.split("\n\n") if block.startswith("event: jobs")]
    assert r.text.startswith("retry: 1000") and len(events) == 1
    data = json.loads(events[0].split("data: ", 1)[1])
    assert data == browser.get("/ui/jobs.json").json()
    assert anonymous(client).get("/ui/jobs/events").status_code == 401
