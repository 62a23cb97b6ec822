"""The job-poll hot path: tenant cache, the fast path for GET /jobs/{id}, and its fall-backs."""

from __future__ import annotations

import time
from functools import partial

import pytest

from api.fastpath import POOL_REST_S, JobPollFastPath
from core.auth import revoke_key
from core.db import session_scope
from core.jobs import create_job
from tests.utils import add_ready_model, new_key, reset_caches


@pytest.fixture
def answers(monkeypatch):
    """What the fast path answered for each request it saw: bytes, or None for 'left to the route'."""
    seen: list[bytes | None] = []
    original = JobPollFastPath._answer

    async def spy(self, scope, job_id):
        out = await original(self, scope, job_id)
        seen.append(out)
        return out

    monkeypatch.setattr(JobPollFastPath, "_answer", spy)
    return seen


def _job(tenant: str = "local") -> str:
    with session_scope() as session:
        model = add_ready_model(session, f"m-{tenant}")
        return create_job(session, "unlearn", tenant_id=tenant, params={}, model_id=model.id).id


def _poll_count(client) -> float:
    """Requests counted under GET /jobs/{job_id} with status 200 in this process's request metrics."""
    series = 'lethe_http_request_duration_seconds_count{method="GET",route="/jobs/{job_id}",status="200"}'
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(series)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_fast_path_answers_exactly_what_the_route_does(client, answers):
    job_id = _job()
    counted = _poll_count(client)
    cold = client.get(f"/jobs/{job_id}")  # key not cached yet: the route answers and caches the tenant
    warm = client.get(f"/jobs/{job_id}")
    assert answers[0] is None and answers[1] is not None
    assert cold.status_code == warm.status_code == 200
    assert cold.content == warm.content == answers[1]
    assert warm.headers["content-type"] == cold.headers["content-type"] == "application/json"
    assert warm.json()["id"] == job_id and warm.json()["status"] == "queued"
    assert _poll_count(client) == counted + 2  # both are timed under the route's template


def test_fast_path_leaves_errors_to_the_route(client, answers, monkeypatch):
    mine, theirs = _job(), _job("other")
    assert client.get(f"/jobs/{mine}").status_code == 200  # warms the cache
    other_tenant = client.get(f"/jobs/{theirs}")
    missing = client.get("/jobs/no-such-job")
    assert other_tenant.status_code == missing.status_code == 404
    assert other_tenant.json()["detail"] == f"job {theirs} not found"
    assert client.get(f"/jobs/{mine}", headers={"X-API-Key": "lethe_wrong"}).status_code == 401
    assert answers[1:] == [None, None, None]
    monkeypatch.setenv("LETHE_RATE_LIMIT", "2/minute")
    reset_caches()
    statuses = [client.get(f"/jobs/{mine}").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.get(f"/jobs/{mine}")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("ttl", [0.5, 0.0])
def test_a_revoked_key_works_only_while_cached(client, monkeypatch, ttl):
    """With the cache on, a process that checked a key accepts it until the entry expires; off, never.

    The cache reads a clock the test moves, so the window is exact however slow the requests are."""
    from cachetools import TTLCache

    now = [1000.0]
    monkeypatch.setattr("api.deps.TTLCache", partial(TTLCache, timer=lambda: now[0]))
    monkeypatch.setenv("LETHE_AUTH_CACHE_SECONDS", str(ttl))
    reset_caches()
    key = new_key("revoked")
    assert client.get("/jobs", headers={"X-API-Key": key}).status_code == 200
    with session_scope() as session:
        revoke_key(session, key)
    assert client.get("/jobs", headers={"X-API-Key": key}).status_code == (200 if ttl else 401)
    now[0] += ttl * 0.99
    assert client.get("/jobs", headers={"X-API-Key": key}).status_code == (200 if ttl else 401)
    now[0] += ttl * 0.02
    assert client.get("/jobs", headers={"X-API-Key": key}).status_code == 401


def test_fast_path_on_the_embedded_default(tmp_path, monkeypatch, answers):
    """On SQLite the fast path reads on the event loop; the answer is still the route's, byte for byte."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.migrate import upgrade
    from core.settings import get_settings
    from tests.utils import configure

    configure(monkeypatch, home=tmp_path / "home", maintenance_seconds=0)
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    job_id = _job()
    try:
        with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as client:
            cold, warm = client.get(f"/jobs/{job_id}"), client.get(f"/jobs/{job_id}")
            missing = client.get("/jobs/no-such-job")
    finally:
        reset_caches()
    assert answers[:3] == [None, warm.content, None]
    assert cold.status_code == warm.status_code == 200 and cold.content == warm.content
    assert missing.status_code == 404


def _poll_backends(pg_url: str) -> list[int]:
    """Server pids of this database's connections from API poll pools."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'lethe-poll' AND datname = current_database()"
        ).fetchall()
    return [pid for (pid,) in rows]


def test_on_postgres_a_poll_reads_through_the_async_pool_and_survives_a_dropped_connection(pg_env, answers):
    """The warm poll runs no statement on SQLAlchemy's engine; a killed pool connection costs one fall-back."""
    import psycopg
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from api.main import create_app
    from core.db import get_engine

    statements: list[str] = []
    event.listen(get_engine(), "before_cursor_execute", lambda *a: statements.append(a[2]))
    job_id = _job()
    with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as client:
        route = client.get(f"/jobs/{job_id}")  # the route: checks the key, caches the tenant
        statements.clear()
        fast = client.get(f"/jobs/{job_id}")
        assert statements == [] and answers[-1] == fast.content == route.content
        pids = _poll_backends(pg_env["LETHE_DATABASE_URL"])
        assert 1 <= len(pids) <= 4
        dsn = pg_env["LETHE_DATABASE_URL"].replace("+psycopg", "")
        with psycopg.connect(dsn, autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        after_kill = client.get(f"/jobs/{job_id}")
        assert after_kill.status_code == 200 and after_kill.content == route.content
        assert answers[-1] is None  # the read failed on the dead connection; the route answered
        assert client.get(f"/jobs/{job_id}").content == route.content and answers[-1] is None  # resting
        time.sleep(POOL_REST_S + 0.1)
        again = [client.get(f"/jobs/{job_id}") for _ in range(3)]
        assert answers[-1] == again[-1].content == route.content  # the pool reconnected by itself
    assert _poll_backends(pg_env["LETHE_DATABASE_URL"]) == []  # closed with the app
