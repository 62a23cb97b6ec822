"""Models: train from scratch, read metadata and lineage."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import SessionDep, TenantDep
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.schemas import ModelCreate, ModelCreated, ModelList, ModelPublic
from core import services
from core.tables import Dataset, Model

router = APIRouter(prefix="/models", tags=["models"])


def to_public(session: SessionDep, model: Model) -> ModelPublic:
    ds = session.get(Dataset, model.dataset_id)
    return ModelPublic(
        id=model.id,
        name=model.name,
        dataset=ds.name if ds else model.dataset_id,
        status=model.status,
        made_by=model.made_by,
        parent_id=model.parent_id,
        lineage=services.model_lineage(session, model),
        n_forgotten=model.n_forgotten,
        forgotten_sha256=model.forgotten_sha256,
        arch=model.arch,
        recipe=model.recipe,
        seed=model.seed,
        metrics=model.metrics or {},
        job_id=model.job_id,
        created_at=model.created_at,
    )


@router.post("", status_code=202, response_model=ModelCreated, summary="Train a new model from scratch")
def create_model(
    body: ModelCreate, session: SessionDep, tenant: TenantDep, idempotency_key: IdempotencyHeader = None
) -> ModelCreated:
    def create() -> Created:
        job, model = services.create_training(
            session,
            tenant_id=tenant,
            name=body.name,
            dataset_ref=body.dataset,
            arch=body.arch,
            recipe=body.recipe,
            seed=body.seed,
        )
        return ModelCreated(job_id=job.id, model_id=model.id), [job.id], 202

    return idempotent(session, tenant, idempotency_key, "POST /models", body, create)


@router.get("", response_model=ModelList, summary="List models, newest first")
def list_models(session: SessionDep, tenant: TenantDep) -> ModelList:
    rows = session.execute(
        select(Model).where(Model.tenant_id == tenant).order_by(Model.created_at.desc())
    ).scalars()
    data = [to_public(session, m) for m in rows]
    return ModelList(data=data, count=len(data))


@router.get("/{model_ref}", response_model=ModelPublic, summary="A model by id or name")
def get_model(model_ref: str, session: SessionDep, tenant: TenantDep) -> ModelPublic:
    return to_public(session, services.resolve_model(session, model_ref, tenant))
