"""A deletion request does not wait behind research: with an evaluation's runs occupying a real worker, a new
forget request is the next job it starts, on both backends. Asserted on the order jobs started in."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.queue import worker_queues
from core.tables import Job
from tests.e2e.stack import Processes, wait_for
from tests.utils import configure, new_key, reset_caches, train_model

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FORGET = list(range(0, 300, 30))
RESEARCH = ("reference_run", "unlearn_run")


@pytest.fixture(params=["embedded", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    queue = f"lethe-order-{uuid.uuid4().hex[:8]}"
    if request.param == "postgres":
        env = request.getfixturevalue("pg_env")
        configure(
            monkeypatch,
            home=tmp_path / "home",
            database_url=env["LETHE_DATABASE_URL"],
            broker_url=env["LETHE_BROKER_URL"],
            queue=queue,
            device="cpu",
        )
    else:
        from core.migrate import upgrade
        from core.settings import get_settings

        configure(monkeypatch, home=tmp_path / "home", queue=queue, device="cpu")
        get_settings().ensure_dirs()
        upgrade(get_settings().db_url)
    new_key("local")
    yield
    if request.param == "postgres":
        import redis

        redis.Redis.from_url(os.environ["LETHE_BROKER_URL"]).delete(*worker_queues())
    reset_caches()


def _started() -> list[tuple[str, str, datetime]]:
    """(id, kind, started_at) of the evaluation's runs and the forget request that have started, in order."""
    with session_scope() as session:
        rows = session.execute(
            select(Job.id, Job.kind, Job.started_at).where(
                Job.started_at.is_not(None), Job.kind.in_((*RESEARCH, "unlearn"))
            )
        ).all()
    return sorted(((r.id, r.kind, _utc(r.started_at)) for r in rows), key=lambda r: r[2])


def _utc(moment: datetime) -> datetime:
    """Naive UTC: SQLite hands back naive times, Postgres aware ones, and a fresh row what it was given."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def test_a_forget_request_starts_before_the_queued_research_runs(backend, tmp_path: Path) -> None:
    from cli.main import worker_command
    from core.evaluations import create_evaluation, queued_children
    from core.services import commit_and_publish, create_unlearn

    model_id = train_model("m", {"width": 4}, {"epochs": 1, "batch_size": 64})
    with session_scope() as session:
        _ev, parent = create_evaluation(
            session,
            tenant_id="local",
            model_ref=model_id,
            forget_ids=FORGET,
            # One run per task (a packed method's runs would share one): bad_teacher does not pack. Three
            # epochs over all of retain plus forget keep each run about as long as poison_full's two did.
            method="bad_teacher",
            params={"epochs": 3, "retain_fraction": 1.0},
            n_models=3,
            delta=0.05,
        )
        runs = queued_children(session, parent.id)
        commit_and_publish(session, *runs)
    from core.evaluations import pack_size

    assert len(runs) == 3 + -(-3 // pack_size())  # three unlearned runs, the reference models in packs
    procs = Processes(tmp_path)
    try:
        procs.start("worker", worker_command(), dict(os.environ))
        wait_for(lambda: _started(), 300, "the first research run to start", procs.logs)
        with session_scope() as session:
            job, _request = create_unlearn(
                session, tenant_id="local", model_ref=model_id, forget_ids=[5, 6], method="none", params=None
            )
            commit_and_publish(session, job.id)
            forget_id, asked_at = job.id, _utc(job.created_at)

        def forget_start() -> object | None:
            return next((r[2] for r in _started() if r[0] == forget_id), None)

        began = wait_for(forget_start, 600, "the forget request to start", procs.logs)
        order = _started()
    finally:
        procs.stop()
    # At most the run a worker took as the request arrived started between the two: none of those queued.
    between = [r for r in order if r[1] in RESEARCH and asked_at < r[2] < began]
    before = [r for r in order if r[1] in RESEARCH and r[2] < began]
    assert len(between) <= 1, (asked_at, began, order)
    assert len(before) < len(runs) - 1, (
        order
    )  # research runs were still waiting when the request overtook them
