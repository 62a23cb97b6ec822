"""The sweeper and the reaper on Postgres + Redis: no job lost, none stuck."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core import jobs, services
from core.bootstrap import ensure_digits
from core.db import session_scope
from core.maintenance import sweep
from core.queue import get_celery, queue_length
from core.settings import get_settings
from core.tables import AuditEvent, Job, Model, utcnow
from worker.runner import run_job


@pytest.fixture
def fast_maintenance(pg_env, monkeypatch):
    monkeypatch.setenv("LETHE_STALE_AFTER_SECONDS", "5")
    monkeypatch.setenv("LETHE_REQUEUE_AFTER_SECONDS", "5")
    monkeypatch.setenv("LETHE_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()


def _train_job() -> tuple[str, str]:
    with session_scope() as session:
        ensure_digits(session)
        job, model = services.create_training(
            session,
            tenant_id="local",
            name=None,
            dataset_ref="digits",
            arch={"width": 4},
            recipe={"epochs": 1},
        )
        return job.id, model.id


def _age(job_id: str, **columns) -> None:
    past = utcnow() - timedelta(seconds=60)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**{c: past for c in columns}))


def _purge() -> None:
    with get_celery().connection_for_write() as conn:
        conn.default_channel.queue_purge(get_settings().queue)


def test_a_job_whose_worker_died_is_requeued_then_completes(fast_maintenance):
    job_id, model_id = _train_job()
    with session_scope() as session:
        assert jobs.claim(session, job_id) is not None  # a worker took it ... and died
    _age(job_id, heartbeat_at=True)
    _purge()
    report = sweep()
    assert report.requeued == [job_id] and report.failed == []
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "queued" and job.attempts == 1
        events = (
            session.execute(select(AuditEvent.event).where(AuditEvent.object_id == job_id)).scalars().all()
        )
        assert events[-1] == "requeued"
    assert queue_length() == 1  # published again
    assert run_job(job_id) == "succeeded"
    with session_scope() as session:
        assert session.get(Job, job_id).attempts == 2
        assert session.get(Model, model_id).status == "ready"


def test_a_job_that_keeps_dying_fails_with_the_reason(fast_maintenance):
    job_id, model_id = _train_job()
    with session_scope() as session:
        jobs.claim(session, job_id)
        session.execute(update(Job).where(Job.id == job_id).values(attempts=2))
    _age(job_id, heartbeat_at=True)
    report = sweep()
    assert report.failed == [job_id]
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and "no heartbeat" in job.error and "2 attempts" in job.error
        assert session.get(Model, model_id).status == "failed"


def test_a_fresh_heartbeat_is_left_alone(fast_maintenance):
    job_id, _ = _train_job()
    with session_scope() as session:
        jobs.claim(session, job_id)
    assert sweep().requeued == []


def test_a_lost_message_is_published_again_once(fast_maintenance):
    job_id, _ = _train_job()
    _purge()  # the broker lost the message (say, Redis restarted empty)
    assert sweep().republished == []  # too recent to call lost
    _age(job_id, updated_at=True)
    assert sweep().republished == [job_id]
    assert queue_length() == 1
    _age(job_id, updated_at=True)
    assert sweep().republished == []  # the queue holds it: nothing is lost
    assert run_job(job_id) == "succeeded"


def test_lethe_maintain_once_sweeps_and_says_what_it_did(fast_maintenance):
    """`lethe maintain --once` (the cron form): one pass over a dead worker's job, a lost message and a
    job that keeps dying, reported on one line, then a worker process finishes what it put back."""
    from typer.testing import CliRunner

    from cli.main import app
    from tests.utils import drain

    dead, _ = _train_job()
    lost, _ = _train_job()
    dying, dying_model = _train_job()
    with session_scope() as session:
        jobs.claim(session, dead)
        jobs.claim(session, dying)
        session.execute(update(Job).where(Job.id == dying).values(attempts=2))
    _age(dead, heartbeat_at=True)
    _age(dying, heartbeat_at=True)
    _age(lost, updated_at=True)
    _purge()
    result = CliRunner().invoke(app, ["maintain", "--once"])
    assert result.exit_code == 0, result.output
    assert "requeued 1, failed 1, republished 1" in result.output
    assert queue_length() == 2
    assert drain() == 2
    with session_scope() as session:
        assert {session.get(Job, j).status for j in (dead, lost)} == {"succeeded"}
        assert session.get(Job, dying).status == "failed"
        assert session.get(Model, dying_model).status == "failed"
    again = CliRunner().invoke(app, ["maintain", "--once"])
    assert again.exit_code == 0 and "requeued 0, failed 0, republished 0" in again.output
