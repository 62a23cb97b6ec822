"""One way to record a forget request and its `received` audit event, for POST /unlearn and intake alike.

`request_row` and `received_detail` are what is written; `record_request` writes them through the ORM,
core.intake_fast in one statement on Postgres."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core import idsets
from core.jobs import audit
from core.tables import ForgetRequest, new_id, utcnow


def request_row(
    *,
    tenant_id: str,
    model_id: str,
    ids: np.ndarray,
    ids_sha256: str,
    requested_by: str | None,
    method: str | None = None,
    params: dict[str, Any] | None = None,
    job_id: str | None = None,
    status: str | None = None,
    external_ref: str | None = None,
) -> dict[str, Any]:
    """The forget_requests row of a request (ids compactly, with their sha256), with its id and time."""
    return {
        "id": new_id(),
        "job_id": job_id,
        "tenant_id": tenant_id,
        "model_id": model_id,
        "requested_by": requested_by,
        "ids": idsets.encode(ids),
        "n_ids": int(ids.size),
        "ids_sha256": ids_sha256,
        "method": method,
        "params": params or {},
        "status": status,
        "external_ref": external_ref,
        "created_at": utcnow(),
    }


def received_detail(row: dict[str, Any], forget_class: int | None, **detail: Any) -> dict[str, Any]:
    """The `received` event's detail: the request's model and ids, and its method and external_ref if set."""
    return {
        "model_id": row["model_id"],
        "n_ids": row["n_ids"],
        "sha256": row["ids_sha256"],
        **({"method": row["method"]} if row["method"] is not None else {}),
        "requested_by": row["requested_by"],
        "forget_class": forget_class,
        **({"external_ref": row["external_ref"]} if row["external_ref"] is not None else {}),
        **detail,
    }


def record_request(
    session: Session,
    *,
    tenant_id: str,
    model_id: str,
    ids: np.ndarray,
    requested_by: str | None,
    forget_class: int | None,
    method: str | None = None,
    params: dict[str, Any] | None = None,
    job_id: str | None = None,
    status: str | None = None,
    external_ref: str | None = None,
    ids_sha256: str | None = None,
    **detail: Any,
) -> ForgetRequest:
    """Add the request and its audit event to the session, unflushed.

    Its id is set here, so the caller can name it (a job, an answer) before the one flush that writes both."""
    row = request_row(
        tenant_id=tenant_id,
        model_id=model_id,
        ids=ids,
        ids_sha256=ids_sha256 or idsets.sha256(ids),
        requested_by=requested_by,
        method=method,
        params=params,
        job_id=job_id,
        status=status,
        external_ref=external_ref,
    )
    request = ForgetRequest(**row)
    session.add(request)
    audit(
        session,
        "forget_request",
        request.id,
        "received",
        tenant_id,
        **received_detail(row, forget_class, **detail),
    )
    return request
