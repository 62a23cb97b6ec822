"""Forget quality as a service: reference sets, many-seed evaluations and whole studies.

Seeds: reference run i trains from scratch with seed i; unlearned run i applies the method to the
evaluated model with seed UNLEARN_SEED_BASE + i, so that `retrain` as a method never reproduces a
reference model bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import idsets, purge
from core.errors import InvalidInput
from core.fanout import start_waiting
from core.jobs import audit, create_job, note_kind
from core.services import (
    check_retain_left,
    get_dataset,
    require_ready,
    resolve_forget,
    resolve_model,
    validate_forget_ids,
    validate_method,
    validate_spec,
)
from core.settings import get_settings
from core.tables import (
    FINISHED,
    AuditEvent,
    Dataset,
    Evaluation,
    Job,
    JobStatus,
    ReferenceSet,
    Run,
    Study,
    new_id,
)
from ml.methods.packing import packable
from ml.specs import ArchSpec, Recipe, default_recipe

UNLEARN_SEED_BASE = 10_000
MAX_MODELS = 512


def recipe_key(arch: dict[str, Any], recipe: dict[str, Any], excluded_sha256: str) -> str:
    """sha256 of everything besides the forget set that decides what a reference model is."""
    canonical = json.dumps({"arch": arch, "recipe": recipe, "excluded": excluded_sha256}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_n_models(n_models: int) -> None:
    if not 1 <= n_models <= MAX_MODELS:
        raise InvalidInput("n_models", f"n_models must be between 1 and {MAX_MODELS}, got {n_models}")


def find_or_create_reference_set(
    session: Session,
    *,
    tenant_id: str,
    dataset: Dataset,
    forget: np.ndarray,
    excluded: np.ndarray,
    arch: dict[str, Any],
    recipe: dict[str, Any],
) -> tuple[ReferenceSet, bool]:
    """The reference set for this key; True when it was created now."""
    forget_sha = idsets.sha256(forget)
    key = recipe_key(arch, recipe, idsets.sha256(excluded))
    existing = session.execute(
        select(ReferenceSet).where(
            ReferenceSet.tenant_id == tenant_id,
            ReferenceSet.dataset_id == dataset.id,
            ReferenceSet.forget_sha256 == forget_sha,
            ReferenceSet.recipe_sha256 == key,
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing, False
    rs = ReferenceSet(
        tenant_id=tenant_id,
        dataset_id=dataset.id,
        forget_ids=idsets.encode(forget),
        n_forget=int(forget.size),
        forget_sha256=forget_sha,
        excluded_ids=idsets.encode(excluded),
        arch=arch,
        recipe=recipe,
        recipe_sha256=key,
    )
    session.add(rs)
    session.flush()
    audit(
        session, "reference_set", rs.id, "created", tenant_id, n_forget=rs.n_forget, forget_sha256=forget_sha
    )
    return rs, True


def queue_run_job(
    session: Session, kind: str, *, tenant_id: str, params: dict[str, Any], parent_id: str | None
) -> Job:
    """A queued run job added without a flush of its own: a fan-out's hundreds of rows go out in one batch."""
    job = Job(
        id=new_id(),
        kind=kind,
        tenant_id=tenant_id,
        params=params,
        status=JobStatus.queued,
        parent_id=parent_id,
    )
    session.add(job)
    note_kind(session, job.id, kind)
    if parent_id is None:
        audit(session, "job", job.id, "queued", tenant_id, kind=kind)
    else:  # a child run has no webhook deliveries: skip audit()'s lookup, whose autoflush costs a round trip
        session.add(
            AuditEvent(
                object_type="job",
                object_id=job.id,
                event="queued",
                tenant_id=tenant_id,
                detail={"kind": kind},
            )
        )
    return job


def queue_packs(
    session: Session, kind: str, seeds: list[int], size: int, *, tenant_id: str, parent_id: str | None
) -> list[tuple[str, list[int]]]:
    """One run job per pack of up to `size` seeds (ml/ensemble.py trains a pack together; each seed stays its
    own Run, which the caller adds): (job id, seeds) per pack."""
    packs = []
    for start in range(0, len(seeds), size):
        pack = seeds[start : start + size]
        params: dict[str, Any] = {"seeds": pack} if size > 1 else {"seed": pack[0]}
        job = queue_run_job(session, kind, tenant_id=tenant_id, params=params, parent_id=parent_id)
        packs.append((job.id, pack))
    return packs


def usable_reference_runs(session: Session, rs_id: str) -> list[tuple[Run, Job]]:
    """Runs of the set that succeeded or may still succeed, by seed."""
    rows = session.execute(
        select(Run, Job)
        .join(Job, Job.id == Run.job_id)
        .where(Run.reference_set_id == rs_id)
        .order_by(Run.seed)
    ).all()
    return [(r, j) for r, j in rows if j.status not in (JobStatus.failed, JobStatus.cancelled)]


def ensure_reference_runs(
    session: Session, rs: ReferenceSet, n_models: int, *, parent_id: str | None
) -> list[str]:
    """Queue the runs the set lacks to reach n_models; returns the job ids of every run still in progress."""
    usable = usable_reference_runs(session, rs.id)
    taken = set(session.execute(select(Run.seed).where(Run.reference_set_id == rs.id)).scalars())
    # The runs of a pack share one job: wait for each job once.
    pending = list(dict.fromkeys(j.id for _r, j in usable[:n_models] if j.status not in FINISHED))
    seeds: list[int] = []
    seed = 0
    for _ in range(max(0, n_models - len(usable))):
        while seed in taken:
            seed += 1
        taken.add(seed)
        seeds.append(seed)
    for job_id, pack in queue_packs(
        session, "reference_run", seeds, pack_size(), tenant_id=rs.tenant_id, parent_id=parent_id
    ):
        for s in pack:
            session.add(
                Run(tenant_id=rs.tenant_id, kind="reference", reference_set_id=rs.id, seed=s, job_id=job_id)
            )
        pending.append(job_id)
    session.flush()
    return pending


PACK_SIZES = {"cpu": 8, "cuda": 32}
"""Runs per task when LETHE_PACK_SIZE is 0, by the workers' LETHE_DEVICE: on a CPU packing gained up to 8 and
no more (docs/ensemble.md); a GPU holds more (ml.ensemble.CUDA_PACK_CAP). A worker trains a task's runs in
packs its device holds (ml.ensemble.device_pack_size), so a task larger than that only runs longer."""

DEFAULT_PACK_SIZE = PACK_SIZES["cpu"]
"""LETHE_DEVICE=auto: the API cannot see the workers' device, and a CPU's size keeps tasks small."""


def pack_size() -> int:
    """How many runs one task trains together: LETHE_PACK_SIZE, else the size for the workers' device."""
    settings = get_settings()
    return settings.pack_size or PACK_SIZES.get(settings.device.split(":")[0], DEFAULT_PACK_SIZE)


def _source(session: Session, tenant_id: str, model_ref: str | None, dataset_ref: str | None):
    """The model (if any) and data set an evaluation or reference set is about."""
    if model_ref and dataset_ref:
        raise InvalidInput("dataset", "give model_id or dataset, not both (a model names its data set)")
    if model_ref:
        model = resolve_model(session, model_ref, tenant_id)
        ds = session.get(Dataset, model.dataset_id)
        return model, ds
    if dataset_ref:
        return None, get_dataset(session, dataset_ref, tenant_id)
    raise InvalidInput("model_id", "give model_id or dataset")


def create_reference_request(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str | None,
    dataset_ref: str | None,
    forget_ids: list[int],
    n_models: int,
    arch: dict[str, Any] | None,
    recipe: dict[str, Any] | None,
) -> tuple[ReferenceSet, Job | None]:
    """A reference set with at least n_models runs; the job is None when nothing needs training."""
    check_n_models(n_models)
    model, ds = _source(session, tenant_id, model_ref, dataset_ref)
    forget = validate_forget_ids(forget_ids, ds.n_train)
    check_retain_left(ds, forget, model.forgotten_ids if model else None)
    base_arch = model.arch if model else {}
    base_recipe = model.recipe if model else default_recipe(ds.kind).model_dump(mode="json")
    arch_d = validate_spec(ArchSpec, {**base_arch, **(arch or {})}, "arch").model_dump(mode="json")
    recipe_d = validate_spec(Recipe, {**base_recipe, **(recipe or {})}, "recipe").model_dump(mode="json")
    if model is not None:
        require_ready(model, model_ref or model.id)
    excluded = np.setdiff1d(idsets.decode(model.forgotten_ids) if model else np.zeros(0, np.int64), forget)
    rs, _ = find_or_create_reference_set(
        session,
        tenant_id=tenant_id,
        dataset=ds,
        forget=forget,
        excluded=excluded,
        arch=arch_d,
        recipe=recipe_d,
    )
    if len(usable_reference_runs(session, rs.id)) >= n_models:
        return rs, None
    parent = create_job(
        session, "reference", tenant_id=tenant_id, params={"reference_set_id": rs.id, "n_models": n_models}
    )
    start_waiting(parent, ensure_reference_runs(session, rs, n_models, parent_id=parent.id))
    return rs, parent


def create_evaluation(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str,
    forget_ids: list[int] | None,
    method: str,
    params: dict[str, Any] | None,
    n_models: int,
    delta: float,
    study_id: str | None = None,
    parent_id: str | None = None,
    forget_class: int | None = None,
) -> tuple[Evaluation, Job]:
    """Queue N seeded runs of the method and whatever reference runs are missing; scored when all end."""
    check_n_models(n_models)
    if not 0.0 <= delta < 1.0:
        raise InvalidInput("delta", f"delta must lie in [0, 1), got {delta}")
    model = resolve_model(session, model_ref, tenant_id)
    ds = session.get(Dataset, model.dataset_id)
    forget = resolve_forget(ds, forget_ids, forget_class)
    check_retain_left(
        ds, forget, model.forgotten_ids, "forget_class" if forget_class is not None else "forget_ids"
    )
    clean = validate_method(method, params)
    purge.require_weights(model, "evaluated")
    require_ready(model, model_ref)
    excluded = np.setdiff1d(idsets.decode(model.forgotten_ids), forget)
    rs, _ = find_or_create_reference_set(
        session,
        tenant_id=tenant_id,
        dataset=ds,
        forget=forget,
        excluded=excluded,
        arch=model.arch,
        recipe=model.recipe,
    )
    parent = create_job(
        session,
        "evaluate",
        tenant_id=tenant_id,
        params={"method": method, "n_models": n_models, "delta": delta},
        model_id=model.id,
        parent_id=parent_id,
    )
    evaluation = Evaluation(
        tenant_id=tenant_id,
        model_id=model.id,
        reference_set_id=rs.id,
        study_id=study_id,
        method=method,
        params=clean,
        n_models=n_models,
        delta=delta,
        job_id=parent.id,
    )
    session.add(evaluation)
    session.flush()
    waits = ensure_reference_runs(session, rs, n_models, parent_id=parent.id)
    # Methods that train through the trainer run K seeds per task, packed (ml/methods/packed.py); others one.
    seeds = [UNLEARN_SEED_BASE + i for i in range(n_models)]
    size = pack_size() if packable(method) else 1
    for job_id, pack in queue_packs(
        session, "unlearn_run", seeds, size, tenant_id=tenant_id, parent_id=parent.id
    ):
        for s in pack:
            session.add(
                Run(tenant_id=tenant_id, kind="unlearned", evaluation_id=evaluation.id, seed=s, job_id=job_id)
            )
        waits.append(job_id)
    session.flush()
    parent.params = {**parent.params, "evaluation_id": evaluation.id, "reference_set_id": rs.id}
    start_waiting(parent, waits)
    audit(
        session,
        "evaluation",
        evaluation.id,
        "created",
        tenant_id,
        method=method,
        n_models=n_models,
        model_id=model.id,
    )
    return evaluation, parent


def create_study(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str,
    forget_ids: list[int] | None,
    forget_fraction: float | None,
    methods: list[str],
    n_models: int,
    delta: float,
    seed: int,
) -> tuple[Study, Job]:
    """One reference set and one evaluation per method, as the study ran them."""
    if not methods:
        raise InvalidInput("methods", "methods is empty: name at least one method")
    if len(set(methods)) != len(methods):
        raise InvalidInput("methods", "methods has duplicates")
    for name in methods:
        validate_method(name, None)
    model = resolve_model(session, model_ref, tenant_id)
    ds = session.get(Dataset, model.dataset_id)
    if (forget_ids is None) == (forget_fraction is None):
        raise InvalidInput("forget_ids", "give exactly one of forget_ids and forget_fraction")
    if forget_ids is None:
        if not 0.0 < forget_fraction < 1.0:
            raise InvalidInput("forget_fraction", "forget_fraction must lie strictly between 0 and 1")
        candidates = np.setdiff1d(np.arange(ds.n_train), idsets.decode(model.forgotten_ids))
        count = max(1, round(forget_fraction * ds.n_train))
        rng = np.random.default_rng(seed)
        forget_ids = np.sort(rng.choice(candidates, size=min(count, candidates.size), replace=False)).tolist()
    check_retain_left(ds, validate_forget_ids(forget_ids, ds.n_train), model.forgotten_ids)
    require_ready(model, model_ref)
    parent = create_job(
        session,
        "study",
        tenant_id=tenant_id,
        params={"methods": methods, "n_models": n_models},
        model_id=model.id,
    )
    study = Study(
        tenant_id=tenant_id,
        model_id=model.id,
        reference_set_id="",
        methods=methods,
        n_models=n_models,
        job_id=parent.id,
    )
    evaluations = []
    for name in methods:
        ev, job = create_evaluation(
            session,
            tenant_id=tenant_id,
            model_ref=model.id,
            forget_ids=forget_ids,
            method=name,
            params=None,
            n_models=n_models,
            delta=delta,
            parent_id=parent.id,
        )
        evaluations.append((ev, job))
    study.reference_set_id = evaluations[0][0].reference_set_id
    session.add(study)
    session.flush()
    for ev, _job in evaluations:
        ev.study_id = study.id
    parent.params = {**parent.params, "study_id": study.id}
    start_waiting(parent, [job.id for _ev, job in evaluations])
    audit(session, "study", study.id, "created", tenant_id, methods=methods, n_models=n_models)
    return study, parent


def queued_children(session: Session, parent_id: str) -> list[str]:
    """Every queued job below this parent (runs of evaluations of a study included), to publish."""
    out: list[str] = []
    frontier = [parent_id]
    while frontier:
        rows = session.execute(select(Job.id, Job.status).where(Job.parent_id.in_(frontier))).all()
        out.extend(r.id for r in rows if r.status == JobStatus.queued)
        frontier = [r.id for r in rows]
    return out
