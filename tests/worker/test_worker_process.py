"""A real Celery worker process: a job past its time limit, and several jobs at once in one worker."""

from __future__ import annotations

from core import services
from core.bootstrap import ensure_digits
from core.db import session_scope
from core.settings import get_settings
from core.tables import Job, Model
from tests.utils import drain


def _publish_training(name: str, epochs: int) -> tuple[str, str]:
    """Queue and publish the training of a width-4 digits model, as POST /models does."""
    with session_scope() as session:
        ensure_digits(session)
        job, model = services.create_training(
            session,
            tenant_id="local",
            name=name,
            dataset_ref="digits",
            arch={"width": 4},
            recipe={"epochs": epochs, "batch_size": 64},
        )
        services.commit_and_publish(session, job.id)
        return job.id, model.id


def test_a_job_past_its_time_limit_fails_with_the_reason(pg_env, monkeypatch):
    """The soft limit (a minute before the hard one) ends the job cleanly: failed, saying why, model failed."""
    # soft limit 20 s into the job: a new pool process first imports the handlers (PyTorch, the methods),
    # which under load took longer than 2 s and left the job unclaimed when the limit struck
    monkeypatch.setattr("core.queue.TIME_LIMITS", {"train": 80})
    job_id, model_id = _publish_training("slow", epochs=500)
    assert drain(timeout=300) == 1
    with session_scope() as session:
        job, model = session.get(Job, job_id), session.get(Model, model_id)
        assert job.status == "failed" and job.attempts == 1, (job.status, job.error)
        assert "time limit" in job.error.lower(), job.error
        assert job.progress < 0.5 and model.status == "failed"


def test_several_jobs_run_at_once_in_one_worker(pg_env, monkeypatch):
    """With LETHE_WORKER_CONCURRENCY=2 one worker runs two jobs side by side, in two pool processes.

    Each job trains for 40 epochs (several seconds): at 3 one job ended 0.7 s before the other pool process,
    still importing the handlers, claimed the second, and they did not overlap."""
    monkeypatch.setenv("LETHE_WORKER_CONCURRENCY", "2")
    get_settings.cache_clear()
    jobs = [_publish_training(f"side-{i}", epochs=40)[0] for i in range(2)]
    assert drain() == 2
    with session_scope() as session:
        rows = [session.get(Job, j) for j in jobs]
        assert [r.status for r in rows] == ["succeeded", "succeeded"]
        assert all(r.attempts == 1 for r in rows)
        assert len({r.worker for r in rows}) == 2  # host:pid of two pool processes
        starts, ends = [r.started_at for r in rows], [r.finished_at for r in rows]
        assert max(starts) < min(ends), (starts, ends)  # they overlapped
