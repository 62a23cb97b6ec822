"""Purging a model's weights, and the tenant setting that purges parents on its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from api.bodies import body_doc, json_body
from api.deps import PathRef, SessionDep, TenantDep
from api.schemas_proof import ModelPurged, TenantSettingsPublic, TenantSettingsUpdate
from core import purge
from core.tables import Model

router = APIRouter(tags=["models"])


@router.post(
    "/models/{model_ref}/purge",
    response_model=ModelPurged,
    summary="Delete a model's weights; keep its row, lineage, checksum and audit trail",
)
def purge_model(model_ref: PathRef, session: SessionDep, tenant: TenantDep) -> ModelPurged:
    """The parent of an unlearned model still holds the forgotten samples: purge deletes its checkpoint from the artifact store and marks it `purged`. Unlearning, evaluating or downloading it is then a 409. 409 too while a job still reads its weights, or when it has none (training, failed, already purged)."""
    model = purge.purge_model(session, model_ref, tenant)
    public = _purged(model)
    session.commit()
    return public


def _purged(model: Model) -> ModelPurged:
    return ModelPurged(
        model_id=model.id,
        name=model.name,
        status=model.status,
        purged_at=model.purged_at,
        checkpoint_sha256=model.checkpoint_sha256,
    )


@router.get(
    "/tenant/settings", response_model=TenantSettingsPublic, tags=["tenant"], summary="This tenant's settings"
)
def read_settings(session: SessionDep, tenant: TenantDep) -> TenantSettingsPublic:
    """Choices that change what the service does on its own for this tenant."""
    return TenantSettingsPublic.model_validate(purge.tenant_settings(session, tenant), from_attributes=True)


@router.patch(
    "/tenant/settings",
    response_model=TenantSettingsPublic,
    tags=["tenant"],
    summary="Change settings",
    openapi_extra=body_doc(TenantSettingsUpdate),
)
def update_settings(
    session: SessionDep,
    tenant: TenantDep,
    body: Annotated[TenantSettingsUpdate, json_body(TenantSettingsUpdate)],
) -> TenantSettingsPublic:
    """Set the settings given (the others keep their values); every change is an audit event."""
    row = purge.update_tenant_settings(session, tenant, body.model_dump(exclude_none=True))
    public = TenantSettingsPublic.model_validate(row, from_attributes=True)
    session.commit()
    return public
