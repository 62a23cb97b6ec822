"""Small helpers for tests: settings, cleanup, factories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

TABLES = (
    "scores",
    "dashboard_sessions",
    "tenant_settings",
    "webhook_deliveries",
    "webhooks",
    "idempotency_keys",
    "api_keys",
    "tenants",
    "audit_events",
    "runs",
    "evaluations",
    "studies",
    "reference_sets",
    "forget_requests",
    "jobs",
    "models",
    "datasets",
)


def reset_caches() -> None:
    """Forget cached settings, engines and the Celery app so new environment variables apply."""
    from api.deps import TENANTS
    from api.limits import reset_limiters
    from core.db import reset_engine
    from core.queue import get_celery
    from core.settings import get_settings

    reset_engine()
    get_settings.cache_clear()
    get_celery.cache_clear()
    reset_limiters()
    TENANTS.clear()


def configure(monkeypatch: pytest.MonkeyPatch, *, home: Path, **values: Any) -> dict[str, str]:
    """Point LETHE_* settings at the given values for this test; returns the environment used."""
    env = {"LETHE_HOME": str(home)}
    env.update({f"LETHE_{k.upper()}": str(v) for k, v in values.items()})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    return env


def truncate_all(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    engine.dispose()


def add_ready_model(session: Any, name: str = "m1") -> Any:
    """A ready model row on digits (no checkpoint: for validation tests that never reach a worker)."""
    from core.bootstrap import ensure_digits
    from core.tables import Model, ModelStatus

    ds = ensure_digits(session)
    model = Model(name=name, dataset_id=ds.id, arch={"width": 8}, recipe={}, status=ModelStatus.ready)
    session.add(model)
    session.flush()
    return model


def new_key(tenant: str = "local") -> str:
    """A fresh API key for the tenant in the configured database."""
    from core.auth import create_key
    from core.db import session_scope

    with session_scope() as session:
        return create_key(session, tenant)


def next_queued_job() -> str | None:
    """The oldest queued job, which a worker would take next."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.tables import Job

    with session_scope() as session:
        return session.execute(
            select(Job.id).where(Job.status == "queued").order_by(Job.created_at, Job.id).limit(1)
        ).scalar()


def drain(timeout: float = 600.0) -> int:
    """Let a real worker process consume this test's queues until no job is queued or running.

    Returns how many queued jobs it ran (jobs created by those it ran included; a fan-out parent that was
    already running and finished meanwhile not)."""
    from tests.broker import consuming, finished_job_ids, unfinished_jobs, wait_until_idle

    waiting = unfinished_jobs()
    if not waiting:
        return 0  # nothing to run: no worker process needed
    before = finished_job_ids() | {job_id for job_id, _, status in waiting if status == "running"}
    with consuming() as worker:
        wait_until_idle(worker, timeout)
    return len(finished_job_ids() - before)


def train_model(name: str, arch: dict[str, Any], recipe: dict[str, Any]) -> str:
    """Register digits and train a model on it through the broker and a worker; returns the ready model's id."""
    from core import services
    from core.bootstrap import ensure_digits
    from core.db import session_scope
    from core.tables import Job

    with session_scope() as session:
        ensure_digits(session)
        job, model = services.create_training(
            session, tenant_id="local", name=name, dataset_ref="digits", arch=arch, recipe=recipe
        )
        services.commit_and_publish(session, job.id)
    drain()
    with session_scope() as session:
        status = session.get(Job, job.id).status
    assert status == "succeeded", f"training {name!r} ended {status}"
    return model.id
