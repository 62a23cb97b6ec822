"""What can be asked for: unlearning methods with their parameter schemas, registered data sets."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from api.schemas import DatasetPublic, MethodPublic
from core import services
from ml.methods.params import METHOD_SPECS

router = APIRouter(tags=["catalog"])


@router.get("/methods", response_model=list[MethodPublic], summary="Unlearning methods and their parameters")
def list_methods() -> list[MethodPublic]:
    """Every registered unlearning method with a one-line description and the JSON schema of its parameters."""
    return [
        MethodPublic(name=s.name, description=s.description, params_schema=s.params.model_json_schema())
        for s in METHOD_SPECS.values()
    ]


@router.get("/datasets", response_model=list[DatasetPublic], summary="Registered data sets")
def list_datasets(session: SessionDep, tenant: TenantDep) -> list[DatasetPublic]:
    """The caller's registered data sets and their sizes (the sizes bound every request's sample ids)."""
    return [
        DatasetPublic.model_validate(d, from_attributes=True) for d in services.list_datasets(session, tenant)
    ]
