"""Scores: epsilon-hat of logits made elsewhere, so a team that trains and unlearns on its own machines can
use Lethe as the judge."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from starlette.datastructures import UploadFile as StarletteUploadFile

from api.deps import SessionDep, TenantDep
from api.pagination import Cursor, page
from api.schemas import ScoreList, ScorePublic
from core import scores
from core.errors import InvalidInput
from core.tables import Score
from ml.metrics.epsilon import DEFAULT_DELTA

router = APIRouter(prefix="/scores", tags=["scores"])

UPLOAD_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "a zip of a folder in the study's seed layout (what `lethe epsilon --seed-dir` reads "
            "and a study export writes), or an .npz with `reference` and `unlearned` logits [models, samples, "
            "classes] and `labels` [samples] (or predictions [models, samples] and `targets`, for regression)",
        },
        "delta": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": DEFAULT_DELTA},
        "approach": {
            "type": "string",
            "description": "score only this approach of a seed-layout zip",
            "examples": ["finetune"],
        },
        "bootstrap": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10000,
            "description": "replicates of the bootstrap over models (as `lethe epsilon --bootstrap`)",
        },
    },
}


def to_public(row: Score) -> ScorePublic:
    return ScorePublic(
        id=row.id,
        input_format=row.input_format,
        input_sha256=row.input_sha256,
        input_bytes=row.input_bytes,
        filename=row.filename,
        delta=row.delta,
        results=row.results,
        created_at=row.created_at,
    )


def _bootstrap(value: object) -> int | None:
    if value is None or value == "":
        return None
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise InvalidInput("bootstrap", "bootstrap: a whole number of replicates from 1 to 10000")
    return int(text)


def _delta(value: object) -> float:
    if value is None or value == "":
        return DEFAULT_DELTA
    try:
        delta = float(str(value))
    except ValueError:
        raise InvalidInput("delta", "delta: a number in [0, 1)") from None
    if not (math.isfinite(delta) and 0 <= delta < 1):
        raise InvalidInput("delta", "delta: a number in [0, 1)")
    return delta


@router.post(
    "",
    status_code=201,
    response_model=ScorePublic,
    summary="Epsilon-hat of logits made elsewhere",
    description="multipart/form-data with `file` (a seed-layout zip or an .npz), optional `delta` and "
    "`approach`. Answers the figures `lethe epsilon --json` prints and keeps them under the tenant with the "
    "file's sha256. Arrays are never unpickled; a file over LETHE_MAX_UPLOAD_BYTES, or a zip that would "
    "unpack past LETHE_MAX_SCORE_UNPACKED_BYTES, is 413.",
    responses={413: {"description": "the file is too large"}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_FORM}}}
    },
)
async def create_score(request: Request, session: SessionDep, tenant: TenantDep) -> ScorePublic:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("file", "file: send multipart/form-data with the file in the field 'file'")
    form = await request.form(max_files=1, max_fields=10, max_part_size=1024 * 1024)
    upload = form.get("file")
    if not isinstance(upload, StarletteUploadFile):
        raise InvalidInput("file", "file: attach the logits as the form field 'file'")
    delta = _delta(form.get("delta"))
    approach = form.get("approach")
    approach = str(approach) if approach else None
    bootstrap = _bootstrap(form.get("bootstrap"))
    data = await upload.read()

    def score() -> ScorePublic:
        # Unzipping, loading and scoring take seconds on large inputs: never on the event loop.
        row = scores.create_score(
            session,
            tenant_id=tenant,
            data=data,
            filename=upload.filename,
            delta=delta,
            approach=approach,
            bootstrap=bootstrap,
        )
        session.commit()
        return to_public(row)

    return await run_in_threadpool(score)


@router.get("", response_model=ScoreList, summary="Scores of the caller's tenant, newest first")
def list_scores(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="rows per page")] = 100,
    cursor: Cursor = None,
) -> ScoreList:
    """Every score the tenant asked for, newest first, with its figures and the sha256 of its input; next_cursor leads to the next page."""
    rows, total, next_cursor = page(
        session,
        select(Score).where(Score.tenant_id == tenant),
        [Score.created_at, Score.id],
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return ScoreList(data=[to_public(row) for row in rows], count=total, next_cursor=next_cursor)


@router.get("/{score_id}", response_model=ScorePublic, summary="One score")
def get_score(score_id: str, session: SessionDep, tenant: TenantDep) -> ScorePublic:
    """One score by id: the figures per approach and the sha256 of the file they came from."""
    return to_public(scores.get_score(session, score_id, tenant))
