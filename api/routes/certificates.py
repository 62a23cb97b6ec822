"""Deletion certificates, the key that signs them, and the audit trail export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from api.deps import SessionDep, TenantDep
from api.schemas_proof import Certificate, PublicKey
from core import audit_log, certificates
from core.errors import InvalidInput

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


def _utc(value: datetime | None) -> datetime | None:
    """Times without a zone are taken as UTC, the zone the trail is written in."""
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _cursor(value: str | None) -> int:
    if value is None:
        return 0
    if not value.isdigit() or len(value) > 18:
        raise InvalidInput("cursor", "cursor: pass back the X-Next-Cursor of the previous page unchanged")
    return int(value)


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
    since: Annotated[
        datetime | None, Query(description="first time included (RFC 3339; UTC if no zone)")
    ] = None,
    until: Annotated[datetime | None, Query(description="first time excluded")] = None,
    object_type: Annotated[str | None, Query(max_length=30, examples=["forget_request"])] = None,
    format: Annotated[
        Literal["jsonl", "csv"] | None,
        Query(description="overrides Accept (application/x-ndjson or text/csv)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[
        str | None, Query(max_length=18, description="X-Next-Cursor of the previous page")
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
        after_id=_cursor(cursor),
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
