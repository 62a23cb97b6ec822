"""What happens when two of anything arrive at once: requests with one Idempotency-Key, workers claiming one job.

Each race is forced, not hoped for: a barrier holds both sides at the point where they would collide, then
lets them go together, so the outcome is the same on every run however loaded the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from core import jobs, services
from core.db import session_scope
from core.tables import AuditEvent, ForgetRequest, IdempotencyKey, Job
from tests.utils import add_ready_model

BARRIER_TIMEOUT = 60.0
"""Seconds one side waits for the other before the test fails (instead of hanging)."""


def _both_at_once(first: Callable[[], Any], second: Callable[[], Any]) -> list[Any]:
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(first), pool.submit(second)]
        return [f.result(timeout=2 * BARRIER_TIMEOUT) for f in futures]


def _count(model: type, *where: Any) -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_two_requests_with_one_idempotency_key_at_once_queue_one_job(client, monkeypatch):
    """Both pass the replay check before either commits; the loser of the insert answers the winner's job."""
    with session_scope() as session:
        add_ready_model(session, "m1")
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
    create_unlearn = services.create_unlearn

    def in_step(*args: Any, **kwargs: Any) -> Any:
        made = create_unlearn(*args, **kwargs)
        barrier.wait()  # both requests have their rows, neither has committed
        return made

    monkeypatch.setattr(services, "create_unlearn", in_step)
    body = {"model_id": "m1", "forget_ids": [7, 8], "method": "none"}

    def post() -> Any:
        return client.post("/unlearn", json=body, headers={"Idempotency-Key": "twice"})

    answers = _both_at_once(post, post)
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    assert sorted(a.headers.get("Idempotent-Replayed", "no") for a in answers) == ["no", "true"]
    assert _count(Job, Job.kind == "unlearn") == 1 and _count(ForgetRequest) == 1
    assert _count(IdempotencyKey) == 1
    job = client.get(f"/jobs/{answers[0].json()['job_id']}").json()
    assert job["status"] == "queued"


@pytest.mark.parametrize("rounds", [10])
def test_two_workers_claiming_one_job_at_once_run_it_once(pg_env, rounds):
    """The claim is one conditional UPDATE: of two claims released together, exactly one moves the job."""
    with session_scope() as session:
        model = add_ready_model(session, "m1")
        model_id, tenant = model.id, model.tenant_id
    for _ in range(rounds):
        with session_scope() as session:
            job_id = jobs.create_job(session, "train", tenant_id=tenant, params={}, model_id=model_id).id
        barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)

        def claim(job_id: str = job_id, barrier: threading.Barrier = barrier) -> bool:
            with session_scope() as session:
                session.execute(
                    select(Job.id).where(Job.id == job_id)
                ).scalar_one()  # connected, in a transaction
                barrier.wait()
                return jobs.claim(session, job_id) is not None

        assert sorted(_both_at_once(claim, claim)) == [False, True]
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job.status == "running" and job.attempts == 1
        assert _count(AuditEvent, AuditEvent.object_id == job_id, AuditEvent.event == "running") == 1
