"""Idempotency-Key: the same key and body return the same answer (and job); another body is a conflict."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from core.errors import Conflict
from core.jobs import created_kinds
from core.services import publish_jobs
from core.tables import IdempotencyKey

IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="retrying with the same key and body returns the first answer instead of queueing again",
    ),
]

Created = tuple[BaseModel, list[str], int]
"""What a create function returns: the response body, the job ids to publish, the status code."""

RETRY_AFTER_SECONDS = 2
"""What a 202 suggests waiting before the first look at the job (the shortest jobs take about this long)."""


def accepted_headers(status: int, body: dict) -> dict[str, str]:
    """A 202 says where the job's state is and when to look (RFC 9110's Location and Retry-After)."""
    if status != 202 or not body.get("job_id"):
        return {}
    return {"Location": f"/jobs/{body['job_id']}", "Retry-After": str(RETRY_AFTER_SECONDS)}


def _replay(session: Session, tenant: str, key: str, endpoint: str, digest: str) -> JSONResponse | None:
    row = session.execute(
        select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant, IdempotencyKey.key == key)
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.endpoint != endpoint or row.body_sha256 != digest:
        raise Conflict(f"Idempotency-Key {key!r} was already used with a different request")
    headers = {"Idempotent-Replayed": "true", **accepted_headers(row.status_code, row.response)}
    return JSONResponse(row.response, status_code=row.status_code, headers=headers)


def idempotent(
    session: Session,
    tenant: str,
    key: str | None,
    endpoint: str,
    body: BaseModel,
    create: Callable[[], Created],
) -> BaseModel | JSONResponse:
    """Run `create` once per (tenant, key); commit its rows with the remembered answer, answer, then publish."""
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    if key is not None and (replay := _replay(session, tenant, key, endpoint, digest)) is not None:
        return replay
    response, job_ids, status = create()
    if key is not None:
        session.add(
            IdempotencyKey(
                tenant_id=tenant,
                key=key,
                endpoint=endpoint,
                body_sha256=digest,
                status_code=status,
                response=response.model_dump(mode="json"),
            )
        )
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first: answer what it answered.
        session.rollback()
        replay = _replay(session, tenant, key, endpoint, digest) if key else None
        if replay is None:
            raise
        return replay
    body = response.model_dump(mode="json")
    # Published once the answer is out: a fan-out's hundreds of messages take seconds on the embedded broker,
    # and a job whose message is lost stays queued and is published again by the maintenance sweep.
    return JSONResponse(
        body,
        status_code=status,
        headers=accepted_headers(status, body),
        background=BackgroundTask(publish_jobs, job_ids, kinds=created_kinds(session, job_ids)),
    )
