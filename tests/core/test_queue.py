"""The Celery app's broker settings."""

from __future__ import annotations

from kombu.transport import sqlalchemy as sqla_transport

from core.queue import get_celery
from tests.utils import configure


def test_embedded_broker_is_polled_at_the_configured_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(sqla_transport.Transport, "polling_interval", 1.0)
    configure(monkeypatch, home=tmp_path, broker_poll_seconds=0.25)
    app = get_celery()
    assert sqla_transport.Transport.polling_interval == 0.25
    with app.connection_for_write() as conn:
        assert conn.transport.polling_interval == 0.25  # what the consumer's drain loop sleeps between polls
    get_celery.cache_clear()


def test_redis_broker_leaves_the_embedded_transport_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sqla_transport.Transport, "polling_interval", 1.0)
    configure(monkeypatch, home=tmp_path, broker_url="redis://127.0.0.1:6379/15", broker_poll_seconds=0.25)
    get_celery()
    assert sqla_transport.Transport.polling_interval == 1.0
    get_celery.cache_clear()


def test_publishing_jobs_just_committed_needs_no_query(pg_env):
    """Kinds (and so time limits) of jobs the session holds come from it; others from the database."""
    import json

    import redis
    from sqlalchemy import event

    from core.db import get_engine, session_scope
    from core.jobs import create_job
    from core.queue import TIME_LIMITS
    from core.services import publish_jobs

    with session_scope() as other:
        earlier = create_job(other, "train", tenant_id="local", params={}).id
    statements: list[str] = []

    def record(*args) -> None:
        statements.append(args[2])

    event.listen(get_engine(), "before_cursor_execute", record)
    with session_scope() as session:
        job = create_job(session, "unlearn", tenant_id="local", params={})
        session.commit()
        statements.clear()
        publish_jobs([job.id], session)
        assert statements == []
        publish_jobs([earlier], session)  # not in this session: looked up
        assert len(statements) == 1 and "FROM jobs" in statements[0]
    event.remove(get_engine(), "before_cursor_execute", record)
    queued = [
        json.loads(m)
        for m in redis.Redis.from_url(pg_env["LETHE_BROKER_URL"]).lrange(pg_env["LETHE_QUEUE"], 0, -1)
    ]
    limits = {m["headers"]["id"]: m["headers"]["timelimit"] for m in queued}
    assert limits[job.id] == [TIME_LIMITS["unlearn"], TIME_LIMITS["unlearn"] - 60]
    assert limits[earlier] == [TIME_LIMITS["train"], TIME_LIMITS["train"] - 60]
