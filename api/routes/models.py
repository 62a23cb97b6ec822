"""Models: train from scratch, read metadata and lineage."""

from __future__ import annotations

import re

import pydantic_core
from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select
from starlette.datastructures import UploadFile as StarletteUploadFile

from api.bodies import nul_at, parse_body
from api.deps import PathRef, SessionDep, TenantDep
from api.idempotency import Created, IdempotencyHeader, idempotent
from api.pagination import Cursor, Limit, page
from api.schemas import NO_NUL, ModelCreate, ModelCreated, ModelList, ModelPublic
from core import services
from core.checkpoints import Weights, model_weights
from core.errors import InvalidInput
from core.quotas import check_tenant_queue
from core.tables import Dataset, Model
from core.uploads import import_checkpoint

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

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


UPLOAD_FORM = {
    "type": "object",
    "required": ["dataset", "file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": ".safetensors, or a PyTorch state dict file",
        },
        "dataset": {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "pattern": NO_NUL,
            "examples": ["digits"],
        },
        "name": {"type": "string", "maxLength": 100, "pattern": NAME_PATTERN.pattern},
        "arch": {"type": "string", "description": 'ArchSpec as JSON, e.g. {"width": 64}'},
    },
}


@router.post(
    "",
    status_code=202,
    response_model=ModelCreated,
    summary="Train a new model from scratch (JSON), or upload a checkpoint (multipart)",
    description="JSON: queue training and answer 202. multipart/form-data with a `file`: a safetensors file or a "
    "PyTorch state dict read with weights_only=True (never unpickled code), checked key by key and shape by "
    "shape against the architecture; answers 201 with a ready model, or 422 naming what does not fit.",
    responses={201: {"model": ModelCreated, "description": "checkpoint uploaded: the model is ready"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ModelCreate.model_json_schema()},
                "multipart/form-data": {"schema": UPLOAD_FORM},
            },
        }
    },
)
async def create_model(
    request: Request, session: SessionDep, tenant: TenantDep, idempotency_key: IdempotencyHeader = None
) -> ModelCreated | JSONResponse:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await _upload(request, session, tenant)
    body = await run_in_threadpool(parse_body, ModelCreate, await request.body())

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
        check_tenant_queue(session, tenant, new_jobs=1, run_jobs=[])
        return ModelCreated(job_id=job.id, model_id=model.id), [job.id], 202

    return await run_in_threadpool(idempotent, session, tenant, idempotency_key, "POST /models", body, create)


async def _upload(request: Request, session: SessionDep, tenant: str) -> JSONResponse:
    form = await request.form(max_files=1, max_fields=10, max_part_size=1024 * 1024)
    upload = form.get("file")
    if not isinstance(upload, StarletteUploadFile):
        raise InvalidInput("file", "file: attach the checkpoint as the form field 'file'")
    dataset = form.get("dataset")
    if not isinstance(dataset, str) or not dataset or "\x00" in dataset or len(dataset) > 100:
        raise InvalidInput("dataset", "dataset: name the registered data set the checkpoint was trained on")
    name = form.get("name") or None
    try:
        arch = pydantic_core.from_json(str(form.get("arch") or "{}"), allow_inf_nan=False)
    except ValueError:
        raise InvalidInput("arch", "arch: not valid JSON (NaN and Infinity are not JSON)") from None
    if nul_at(arch) is not None:
        raise InvalidInput("arch", "arch: strings may not contain the NUL character")
    if name is not None and not NAME_PATTERN.match(str(name)):
        raise InvalidInput("name", "name: letters, digits, '_', '.' or '-', starting with a letter or digit")
    data = await upload.read()

    def store() -> str:
        model = import_checkpoint(
            session,
            tenant_id=tenant,
            name=name,
            dataset_ref=dataset,
            arch=arch,
            filename=upload.filename or "",
            data=data,
        )
        session.commit()
        return model.id

    model_id = await run_in_threadpool(store)
    return JSONResponse({"job_id": None, "model_id": model_id}, status_code=201)


@router.get("", response_model=ModelList, summary="List models, newest first")
def list_models(
    session: SessionDep, tenant: TenantDep, limit: Limit = 50, cursor: Cursor = None
) -> ModelList:
    """The caller's models with their status, lineage and metrics, newest first; next_cursor leads to the next page."""
    rows, total, next_cursor = page(
        session,
        select(Model).where(Model.tenant_id == tenant),
        [Model.created_at, Model.id],
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return ModelList(data=[to_public(session, m) for m in rows], count=total, next_cursor=next_cursor)


@router.get("/{model_ref}", response_model=ModelPublic, summary="A model by id or name")
def get_model(model_ref: PathRef, session: SessionDep, tenant: TenantDep) -> ModelPublic:
    """A model by id or by name: status (training, ready, failed), how it was made, its parent and lineage, how many samples it has forgotten, and its metrics."""
    return to_public(session, services.resolve_model(session, model_ref, tenant))


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this entity tag (weak or strong, or `*`)."""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


def weights_response(weights: Weights, if_none_match: str | None) -> Response:
    """The checkpoint streamed from the store (ranges honoured), or 304 when the caller already has it."""
    etag = f'"{weights.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if weights.path is None:  # an object store: the bytes were read and their checksum verified
        headers["Content-Disposition"] = f'attachment; filename="{weights.filename}"'
        return Response(weights.data, media_type="application/octet-stream", headers=headers)
    return FileResponse(
        weights.path, media_type="application/octet-stream", filename=weights.filename, headers=headers
    )


@router.get(
    "/{model_ref}/weights",
    summary="Download a model's checkpoint (safetensors)",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the safetensors checkpoint; ETag is its sha256",
        },
        304: {"description": "If-None-Match names the current ETag: the caller already has these weights"},
    },
)
def download_weights(
    model_ref: str,
    session: SessionDep,
    tenant: TenantDep,
    if_none_match: str | None = Header(None, description="an ETag from an earlier download"),
) -> Response:
    """The model's weights as the safetensors file Lethe stores (plain tensors in the study's parameter names), named after the model; its ETag is the file's sha256, so `If-None-Match` answers 304 when the caller already has them. 409 while the model is not ready."""
    return weights_response(model_weights(session, model_ref, tenant), if_none_match)
