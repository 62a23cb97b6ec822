"""Forget quality: reference sets, evaluations (epsilon-hat of a method), and whole studies."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import func, select

from api.bodies import body_doc, json_body
from api.deps import PathRef, SessionDep, TenantDep
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.pagination import Cursor, Limit, page
from api.schemas import (
    NO_NUL,
    EvaluationCreate,
    EvaluationCreated,
    EvaluationPublic,
    EvaluationRow,
    EvaluationTable,
    ReferenceCreate,
    ReferenceCreated,
    ReferenceSetPublic,
    StudyCreate,
    StudyCreated,
    StudyPublic,
)
from core import evaluations as ev
from core import services
from core.artifacts import get_store
from core.errors import NotFound
from core.export import study_zip
from core.group_size import plan_n_models
from core.quotas import check_tenant_queue
from core.settings import get_settings
from core.tables import Evaluation, Job, ReferenceSet, Run, Study

router = APIRouter(tags=["evaluations"])


@router.post(
    "/references",
    response_model=ReferenceCreated,
    status_code=202,
    summary="Retrain N reference models without a forget set",
    responses={200: {"model": ReferenceCreated, "description": "the set already has enough models"}},
    openapi_extra=body_doc(ReferenceCreate),
)
def create_references(
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[ReferenceCreate, json_body(ReferenceCreate)],
    idempotency_key: IdempotencyHeader = None,
) -> ReferenceCreated:
    """Retrains N models from scratch without the forget set, one Celery task each. A set is keyed by data set, forget-set sha256 and recipe: asking again with n_models at most what exists answers 200 and trains nothing; asking for more trains only the missing ones."""

    def create() -> Created:
        rs, job = ev.create_reference_request(
            session,
            tenant_id=tenant,
            model_ref=body.model_id,
            dataset_ref=body.dataset,
            forget_ids=body.forget_ids,
            n_models=body.n_models,
            arch=body.arch,
            recipe=body.recipe,
        )
        if job is None:
            return ReferenceCreated(job_id=None, reference_set_id=rs.id), [], 200
        children = ev.queued_children(session, job.id)
        check_tenant_queue(session, tenant, new_jobs=1, run_jobs=children)
        return ReferenceCreated(job_id=job.id, reference_set_id=rs.id), children, 202

    return idempotent(session, tenant, idempotency_key, "POST /references", body, create)


@router.get("/references/{reference_set_id}", response_model=ReferenceSetPublic, summary="A reference set")
def read_reference_set(
    reference_set_id: PathRef, session: SessionDep, tenant: TenantDep
) -> ReferenceSetPublic:
    """The set's key (forget-set and recipe sha256) and its runs counted by job status."""
    rs = services.get_owned(session, ReferenceSet, reference_set_id, tenant, "reference set")
    counts = session.execute(
        select(Job.status, func.count())
        .join(Run, Run.job_id == Job.id)
        .where(Run.reference_set_id == rs.id)
        .group_by(Job.status)
    ).all()
    return ReferenceSetPublic(
        id=rs.id,
        dataset_id=rs.dataset_id,
        n_forget=rs.n_forget,
        forget_sha256=rs.forget_sha256,
        recipe_sha256=rs.recipe_sha256,
        arch=rs.arch,
        recipe=rs.recipe,
        runs={s: n for s, n in counts},
        created_at=rs.created_at,
    )


@router.post(
    "/evaluations",
    response_model=EvaluationCreated,
    status_code=202,
    summary="Measure how well a method forgets",
    openapi_extra=body_doc(EvaluationCreate),
)
def create_evaluation(
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[EvaluationCreate, json_body(EvaluationCreate)],
    idempotency_key: IdempotencyHeader = None,
) -> EvaluationCreated:
    """Runs the method with N seeds on the model and obtains N reference models (reusing a matching reference set), then scores them: epsilon-hat with its resolution, bootstrap interval over models and smooth estimate, the NeurIPS score, MIA-efficacy, KL to the references, accuracies with their spread, and cost relative to one retrain. Without n_models, N is the fewest whose epsilon-hat ceiling reaches LETHE_TARGET_EPSILON_CEILING; `warnings` says when N cannot tell the method from retrain."""
    n_models, warnings = plan_n_models(body.n_models, body.delta, get_settings().target_epsilon_ceiling)

    def create() -> Created:
        evaluation, job = ev.create_evaluation(
            session,
            tenant_id=tenant,
            model_ref=body.model_id,
            forget_ids=body.forget_ids,
            forget_class=body.forget_class,
            method=body.method,
            params=body.params,
            n_models=n_models,
            delta=body.delta,
        )
        children = ev.queued_children(session, job.id)
        check_tenant_queue(session, tenant, new_jobs=1, run_jobs=children)
        created = EvaluationCreated(
            job_id=job.id, evaluation_id=evaluation.id, n_models=n_models, warnings=warnings
        )
        return created, children, 202

    return idempotent(session, tenant, idempotency_key, "POST /evaluations", body, create)


def _public(session: SessionDep, e: Evaluation) -> EvaluationPublic:
    status = session.get(Job, e.job_id).status
    return EvaluationPublic(
        id=e.id,
        model_id=e.model_id,
        reference_set_id=e.reference_set_id,
        study_id=e.study_id,
        method=e.method,
        params=e.params,
        n_models=e.n_models,
        delta=e.delta,
        status=status,
        job_id=e.job_id,
        results=e.results,
        created_at=e.created_at,
    )


def _row(session: SessionDep, e: Evaluation) -> EvaluationRow:
    row = EvaluationRow(evaluation_id=e.id, method=e.method, status=session.get(Job, e.job_id).status)
    r = e.results
    if not r:
        return row
    measure = "mae" if "retain_mae" in r else "accuracy"
    values = {}
    for part in ("retain", "forget", "test"):
        stat = r.get(f"{part}_{measure}") or {}
        values[part], values[f"{part}_ci95"] = stat.get("mean"), stat.get("ci95")
    return row.model_copy(
        update={
            **{
                k: r.get(k)
                for k in (
                    "epsilon_hat",
                    "ci95",
                    "n_samples",
                    "n_reference",
                    "n_unlearned",
                    "n_infinite",
                    "cost_vs_retrain",
                    "epsilon_ceiling",
                    "n_at_ceiling",
                    "censored",
                    "epsilon_hat_ci95_models",
                    "epsilon_hat_smooth",
                )
            },
            "measure": measure,
            **values,
        }
    )


@router.get(
    "/evaluations",
    response_model=EvaluationTable,
    summary="Methods side by side (the study's Table 1); CSV with Accept: text/csv",
    responses={200: {"content": {"text/csv": {}}}},
)
def list_evaluations(
    session: SessionDep,
    tenant: TenantDep,
    reference_set_id: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    study_id: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    accept: Annotated[str | None, Header()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> EvaluationTable | Response:
    """One row per evaluation, oldest first, filtered by reference set or study: the study's Table 1 as JSON, or as CSV with Accept: text/csv (one page either way; next_cursor, or the CSV's X-Next-Cursor header, leads to the next)."""
    stmt = select(Evaluation).where(Evaluation.tenant_id == tenant)
    if reference_set_id:
        stmt = stmt.where(Evaluation.reference_set_id == reference_set_id)
    if study_id:
        stmt = stmt.where(Evaluation.study_id == study_id)
    found, total, next_cursor = page(
        session, stmt, [Evaluation.created_at, Evaluation.id], limit=limit, cursor=cursor, descending=False
    )
    rows = [_row(session, e) for e in found]
    if accept and "text/csv" in accept:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(EvaluationRow.model_fields), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.model_dump())
        headers = {"X-Next-Cursor": next_cursor} if next_cursor else None
        return Response(out.getvalue(), media_type="text/csv", headers=headers)
    return EvaluationTable(data=rows, count=total, next_cursor=next_cursor)


@router.get(
    "/evaluations/{evaluation_id}", response_model=EvaluationPublic, summary="An evaluation and its results"
)
def read_evaluation(evaluation_id: PathRef, session: SessionDep, tenant: TenantDep) -> EvaluationPublic:
    """An evaluation's parameters, status and, once scored, every figure with its counts and half-widths, the curve over delta and the per-sample epsilons."""
    return _public(session, services.get_owned(session, Evaluation, evaluation_id, tenant, "evaluation"))


@router.get(
    "/evaluations/{evaluation_id}/plots/{name}.png",
    summary="A figure of the evaluation: epsilon-delta or histograms",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def read_plot(evaluation_id: PathRef, name: PathRef, session: SessionDep, tenant: TenantDep) -> Response:
    """PNG figures of a scored evaluation: epsilon-delta (epsilon-hat over delta) or histograms (per-sample statistics of both groups)."""
    e = services.get_owned(session, Evaluation, evaluation_id, tenant, "evaluation")
    if name not in ("epsilon-delta", "histograms"):
        raise NotFound(f"no figure {name!r}; figures: epsilon-delta, histograms")
    key = f"evaluations/{e.id}/{name}.png"
    store = get_store()
    if not store.exists(key):
        raise NotFound(f"evaluation {e.id} has no figures yet (it is not scored)")
    return Response(store.read_bytes(key), media_type="image/png")


@router.post(
    "/studies",
    response_model=StudyCreated,
    status_code=202,
    summary="The study's protocol in one call",
    openapi_extra=body_doc(StudyCreate),
)
def create_study(
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[StudyCreate, json_body(StudyCreate)],
    idempotency_key: IdempotencyHeader = None,
) -> StudyCreated:
    """One reference set and one evaluation per method on the same forget set (given, or drawn as a fraction of the training split with a seed)."""

    def create() -> Created:
        study, job = ev.create_study(
            session,
            tenant_id=tenant,
            model_ref=body.model_id,
            forget_ids=body.forget_ids,
            forget_fraction=body.forget_fraction,
            methods=body.methods,
            n_models=body.n_models,
            delta=body.delta,
            seed=body.seed,
        )
        children = ev.queued_children(session, job.id)
        check_tenant_queue(session, tenant, new_jobs=1, run_jobs=children)
        return StudyCreated(job_id=job.id, study_id=study.id), children, 202

    return idempotent(session, tenant, idempotency_key, "POST /studies", body, create)


@router.get("/studies/{study_id}", response_model=StudyPublic, summary="A study and its evaluations")
def read_study(study_id: PathRef, session: SessionDep, tenant: TenantDep) -> StudyPublic:
    """A study's methods, status and evaluation ids."""
    study = services.get_owned(session, Study, study_id, tenant, "study")
    ids = session.execute(
        select(Evaluation.id).where(Evaluation.study_id == study.id).order_by(Evaluation.created_at)
    ).scalars()
    return StudyPublic(
        id=study.id,
        model_id=study.model_id,
        reference_set_id=study.reference_set_id,
        methods=study.methods,
        n_models=study.n_models,
        status=session.get(Job, study.job_id).status,
        job_id=study.job_id,
        evaluation_ids=list(ids),
        created_at=study.created_at,
    )


@router.get(
    "/studies/{study_id}/export",
    summary="The study's seed layout as a zip (logits_retain.npy, <method>/logits_unlearn.npy, metrics.csv)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, 409: {"description": "not finished yet"}},
)
def export_study(study_id: PathRef, session: SessionDep, tenant: TenantDep) -> Response:
    """A zip in the study's own seed layout (forget_set.txt, logits_retain.npy, metrics.csv, <method>/logits_unlearn.npy and metrics.csv) that the study's scripts and `lethe epsilon` read. 409 until every method is scored."""
    study = services.get_owned(session, Study, study_id, tenant, "study")
    data = study_zip(session, get_store(), study)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="study-{study.id}.zip"'},
    )
