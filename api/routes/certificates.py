"""Deletion certificates, the key that signs them, and the audit trail export."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator

from api.deps import SessionDep, TenantDep
from api.schemas_proof import Certificate, PublicKey
from core import audit_log, certificates

router = APIRouter(tags=["certificates"])
public_router = APIRouter(tags=["certificates"])


@router.get(
    "/forget-requests/{request_id}/certificate",
    response_model=Certificate,
    summary="A signed deletion certificate for a fulfilled forget request",
)
def read_certificate(request_id: str, session: SessionDep, tenant: TenantDep) -> JSONResponse:
    """The request (count and sha256 of the ids, who asked, when), the method and its params, the parent and resulting models with their checkpoint sha256, the timeline from the audit trail, the metrics, the evaluation of the method on this forget set when there is one (epsilon-hat with what it means), and whether the parent's weights were purged; signed with the service's Ed25519 key over canonical JSON (sorted keys, compact separators). 409 until the request is fulfilled. Check one offline with `lethe certificate verify FILE`."""
    return JSONResponse(certificates.certificate(session, request_id, tenant))


@public_router.get(
    "/certificates/public-key",
    response_model=PublicKey,
    summary="The public key that verifies certificates (no API key needed)",
)
async def public_key() -> PublicKey:
    """Ed25519, as raw base64 and as PEM, with its key id (the first 16 hex digits of the sha256 of the raw key)."""
    return PublicKey(**await run_in_threadpool(certificates.public_key_info))


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    """Only RFC 3339 times with a zone (pydantic alone would also take "0.5" as seconds since 1970)."""
    if not isinstance(value, str) or not RFC3339.match(value):
        raise ValueError("give an RFC 3339 date-time with its time zone, such as 2026-11-29T17:00:00Z")
    return value.upper()


Time = Annotated[datetime, BeforeValidator(_rfc3339)]


def _utc(value: datetime | None) -> datetime | None:
    """In UTC, the zone the trail is written in (SQLite compares the text)."""
    return value.astimezone(UTC) if value is not None else None


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the page of events; X-Next-Cursor and Link name the next page while there may be one",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@router.get(
    "/audit",
    response_class=Response,
    responses=EXPORT_RESPONSES,
    summary="Export the audit trail (JSON lines or CSV), by time range, in pages",
)
def export_audit(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    since: Annotated[Time | None, Query(description="first time included (RFC 3339, with its zone)")] = None,
    until: Annotated[Time | None, Query(description="first time excluded")] = None,
    object_type: Annotated[str | None, Query(max_length=30, examples=["forget_request"])] = None,
    format: Annotated[
        Literal["jsonl", "csv"] | None,
        Query(description="overrides Accept (application/x-ndjson or text/csv)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="X-Next-Cursor of the previous page")
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Every state change of the tenant's objects in the order it was recorded: id, time, object, event and detail. Pages of `limit` events; follow X-Next-Cursor (or the Link header) until it is absent."""
    chosen = format or ("csv" if accept and "text/csv" in accept else "jsonl")
    media_type, write = audit_log.FORMATS[chosen]
    rows = audit_log.events(
        session,
        tenant,
        since=_utc(since),
        until=_utc(until),
        after_id=int(cursor or 0),
        limit=limit,
        object_type=object_type,
    )
    headers = {"Cache-Control": "no-store"}
    if len(rows) == limit:
        following = str(rows[-1]["id"])
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        headers["X-Next-Cursor"] = following
        headers["Link"] = f'<{request.url.path}?{urlencode({**query, "cursor": following})}>; rel="next"'
    return Response(write(rows), media_type=media_type, headers=headers)
