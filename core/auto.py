"""Storage for `"method": "auto"`: each proxy forget set is a reference set, its models stored runs.

A proxy's reference models are trained once per model, recipe and proxy, and any later auto request whose
forget set has the same size and class mix finds them here; so does an evaluation with the same key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import session_scope
from core.evaluations import find_or_create_reference_set
from core.tables import Dataset, Job, JobStatus, Run

PROXY_SEED_SALT = b"lethe-auto-proxies"


def proxy_seed(model_id: str) -> int:
    """The seed of a model's proxy draws: fixed per model, so its proxies (and their references) repeat."""
    return int.from_bytes(hashlib.sha256(PROXY_SEED_SALT + model_id.encode()).digest()[:4], "big")


@dataclass(frozen=True)
class StoredRun:
    seed: int
    outputs: str


def reference_set_for(
    *,
    tenant_id: str,
    dataset_id: str,
    proxy: np.ndarray,
    excluded: np.ndarray,
    arch: dict[str, Any],
    recipe: dict[str, Any],
) -> str:
    """The id of the proxy's reference set, created (and committed) when it is new."""
    for attempt in range(2):
        try:
            with session_scope() as session:
                dataset = session.get(Dataset, dataset_id)
                rs, _ = find_or_create_reference_set(
                    session,
                    tenant_id=tenant_id,
                    dataset=dataset,
                    forget=proxy,
                    excluded=excluded,
                    arch=arch,
                    recipe=recipe,
                )
                return rs.id
        except IntegrityError:  # another request created the same set at the same moment: read theirs
            if attempt:
                raise
    raise AssertionError("unreachable")


def stored_runs(session: Session, rs_id: str) -> list[StoredRun]:
    """The set's reference runs whose outputs are stored and whose job did not fail, by seed."""
    rows = session.execute(
        select(Run.seed, Run.outputs)
        .join(Job, Job.id == Run.job_id)
        .where(
            Run.reference_set_id == rs_id,
            Run.kind == "reference",
            Run.outputs.is_not(None),
            Job.status.not_in([JobStatus.failed, JobStatus.cancelled]),
        )
        .order_by(Run.seed)
    ).all()
    return [StoredRun(seed, outputs) for seed, outputs in rows]


def free_seeds(session: Session, rs_id: str, n: int) -> list[int]:
    """The n lowest seeds no run of the set has taken (reference run i trains with seed i)."""
    taken = set(session.execute(select(Run.seed).where(Run.reference_set_id == rs_id)).scalars())
    seeds, seed = [], 0
    while len(seeds) < n:
        if seed not in taken:
            seeds.append(seed)
        seed += 1
    return seeds


def add_reference_runs(
    session: Session,
    *,
    tenant_id: str,
    rs_id: str,
    job_id: str,
    runs: list[tuple[int, str, dict[str, Any]]],
) -> None:
    """Record reference models the auto job trained itself: (seed, outputs key, metrics) each."""
    for seed, outputs, metrics in runs:
        session.add(
            Run(
                tenant_id=tenant_id,
                kind="reference",
                reference_set_id=rs_id,
                seed=seed,
                job_id=job_id,
                outputs=outputs,
                metrics=metrics,
            )
        )
    session.flush()
