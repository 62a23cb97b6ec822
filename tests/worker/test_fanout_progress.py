"""A fan-out job's progress counts its finished runs, a study's through its evaluations, on Postgres.

Runs are moved by hand (claimed, then succeeded) and their parents told as a worker tells them: nothing is
trained, and one run stays unfinished so that no parent reaches its scoring step.
"""

from __future__ import annotations

from sqlalchemy import select

from core import jobs
from core.db import session_scope
from core.tables import Job
from tests.utils import add_ready_model
from worker.settle import notify

FORGET = list(range(0, 300, 30))


def _finish(job_id: str) -> None:
    """What a worker does with a run: claim it, succeed it, tell its parents."""
    with session_scope() as session:
        assert jobs.claim(session, job_id) is not None
        assert jobs.succeed(session, job_id, result={}, metrics={})
    notify(job_id)


def _progress(job_id: str) -> tuple[float, dict]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job.progress, dict(job.progress_info or {})


def test_a_study_counts_the_runs_of_its_evaluations_as_they_finish(client):
    with session_scope() as session:
        add_ready_model(session, "tiny")
    r = client.post(
        "/studies",
        json={"model_id": "tiny", "forget_ids": FORGET, "methods": ["none", "bad_teacher"], "n_models": 2},
    )
    assert r.status_code == 202, r.text
    study_id = r.json()["job_id"]
    with session_scope() as session:
        evaluations = list(
            session.execute(select(Job.id).where(Job.parent_id == study_id, Job.kind == "evaluate")).scalars()
        )
        children = session.execute(
            select(Job.id, Job.kind, Job.parent_id).where(Job.parent_id.in_(evaluations))
        ).all()
    packs = [c.id for c in children if c.kind == "reference_run"]
    unlearned = {
        e: [c.id for c in children if c.kind == "unlearn_run" and c.parent_id == e] for e in evaluations
    }
    # Both evaluations wait for one pack of two reference models, and each for its two unlearned runs
    # (none and bad_teacher run one model per task; packed methods are counted by their seeds the same way).
    assert len(evaluations) == 2 and len(packs) == 1 and all(len(u) == 2 for u in unlearned.values())
    assert _progress(study_id)[0] == 0.0

    first, second = evaluations
    _finish(unlearned[first][0])
    assert _progress(first) == (1 / 4, {"stage": "runs", "finished": 1, "total": 4})
    assert _progress(study_id) == (1 / 6, {"stage": "runs", "finished": 1, "total": 6})
    assert _progress(second)[0] == 0.0

    _finish(packs[0])  # two reference models, shared: counted once in the study
    assert _progress(first)[1]["finished"] == 3 and _progress(second)[1]["finished"] == 2
    assert _progress(study_id) == (3 / 6, {"stage": "runs", "finished": 3, "total": 6})

    _finish(unlearned[second][0])
    assert _progress(second) == (3 / 4, {"stage": "runs", "finished": 3, "total": 4})
    assert _progress(study_id) == (4 / 6, {"stage": "runs", "finished": 4, "total": 6})
