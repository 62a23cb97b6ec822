"""What can be asked for: unlearning methods with their parameter schemas, registered data sets."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import SessionDep, TenantDep
from api.pagination import Cursor, Limit, page
from api.schemas import DatasetList, DatasetPublic, MethodPublic
from core.tables import Dataset
from ml.methods.params import AUTO_SPEC, METHOD_SPECS

router = APIRouter(tags=["catalog"])


@router.get("/methods", response_model=list[MethodPublic], summary="Unlearning methods and their parameters")
def list_methods() -> list[MethodPublic]:
    """Every registered unlearning method with a one-line description and the JSON schema of its parameters,
    then "auto", which chooses one of them (forgetting only: evaluations and studies refuse it)."""
    return [
        MethodPublic(name=s.name, description=s.description, params_schema=s.params.model_json_schema())
        for s in (*METHOD_SPECS.values(), AUTO_SPEC)
    ]


@router.get("/datasets", response_model=DatasetList, summary="Registered data sets")
def list_datasets(
    session: SessionDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None
) -> DatasetList:
    """The caller's registered data sets and their sizes (the sizes bound every request's sample ids), by name."""
    rows, total, next_cursor = page(
        session,
        select(Dataset).where(Dataset.tenant_id == tenant),
        [Dataset.name, Dataset.id],
        limit=limit,
        cursor=cursor,
        descending=False,
    )
    return DatasetList(
        data=[DatasetPublic.model_validate(d, from_attributes=True) for d in rows],
        count=total,
        next_cursor=next_cursor,
    )
