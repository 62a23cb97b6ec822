"""One way to record a forget request and its `received` audit event, for POST /unlearn and intake alike."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from core import idsets
from core.jobs import audit
from core.tables import ForgetRequest, new_id


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
    """Add the request (ids compactly, with their sha256) and its audit event to the session, unflushed; the
    event names the method and the external_ref when the request has them.

    Its id is set here, so the caller can name it (a job, an answer) before the one flush that writes both."""
    digest = ids_sha256 or idsets.sha256(ids)
    request = ForgetRequest(
        id=new_id(),
        job_id=job_id,
        tenant_id=tenant_id,
        model_id=model_id,
        requested_by=requested_by,
        ids=idsets.encode(ids),
        n_ids=int(ids.size),
        ids_sha256=digest,
        method=method,
        params=params or {},
        status=status,
        external_ref=external_ref,
    )
    session.add(request)
    audit(
        session,
        "forget_request",
        request.id,
        "received",
        tenant_id,
        model_id=model_id,
        n_ids=request.n_ids,
        sha256=digest,
        **({"method": method} if method is not None else {}),
        requested_by=requested_by,
        forget_class=forget_class,
        **({"external_ref": external_ref} if external_ref is not None else {}),
        **detail,
    )
    return request
