"""Forget-request intake: record a request durably and cheaply (no job), set a model's forget policy, list requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core import idsets
from core.errors import Conflict, InvalidInput
from core.forget_requests import record_request
from core.jobs import audit
from core.services import model_and_dataset, resolve_forget, resolve_model, validate_method
from core.tables import ForgetPolicy, ForgetRequest, RequestStatus
from ml.methods.params import AUTO


@dataclass(frozen=True)
class Intake:
    """The request an intake call names, and whether this call created it (False: the same one was there)."""

    request: ForgetRequest
    created: bool


def _by_external_ref(session: Session, tenant_id: str, external_ref: str) -> ForgetRequest | None:
    return session.execute(
        select(ForgetRequest).where(
            ForgetRequest.tenant_id == tenant_id, ForgetRequest.external_ref == external_ref
        )
    ).scalar_one_or_none()


def same_as_existing(
    existing: ForgetRequest, model_id: str, ids_sha256: str, requested_by: str | None
) -> ForgetRequest:
    """The request already stored under an external_ref, if it asks the same thing; a different one is a conflict."""
    if (existing.model_id, existing.ids_sha256, existing.requested_by) != (
        model_id,
        ids_sha256,
        requested_by,
    ):
        raise Conflict(
            f"external_ref {existing.external_ref!r} already names forget request {existing.id} "
            "with a different model, sample ids or requester"
        )
    return existing


def take_in(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str,
    forget_ids: list[int] | None,
    forget_class: int | None,
    requested_by: str | None,
    external_ref: str | None,
) -> Intake:
    """Validate as POST /unlearn does, then add a pending request and its audit event; starts no job."""
    model, ds = model_and_dataset(session, model_ref, tenant_id)
    ids = resolve_forget(ds, forget_ids, forget_class)
    digest = idsets.sha256(ids)
    if external_ref is not None and (found := _by_external_ref(session, tenant_id, external_ref)):
        return Intake(same_as_existing(found, model.id, digest, requested_by), created=False)
    request = record_request(
        session,
        tenant_id=tenant_id,
        model_id=model.id,
        ids=ids,
        ids_sha256=digest,
        requested_by=requested_by,
        forget_class=forget_class,
        status=RequestStatus.pending,
        external_ref=external_ref,
        batched=True,
    )
    return Intake(request, created=True)


def put_policy(
    session: Session,
    *,
    tenant_id: str,
    model_ref: str,
    method: str,
    params: dict[str, Any] | None,
    window_seconds: float,
    max_requests: int | None,
    max_samples: int | None,
    evaluate: bool,
) -> ForgetPolicy:
    """Create or replace a model's forget policy; a batch already running keeps the settings it started with."""
    model = resolve_model(session, model_ref, tenant_id)
    clean = validate_method(method, params, allow_auto=True)
    if method == AUTO and evaluate:
        raise InvalidInput("evaluate", "evaluate needs a fixed method: auto chooses one per batch")
    policy = session.get(ForgetPolicy, model.id)
    if policy is None:
        policy = ForgetPolicy(model_id=model.id, tenant_id=tenant_id)
        session.add(policy)
    policy.method, policy.params, policy.window_seconds = method, clean, window_seconds
    policy.max_requests, policy.max_samples, policy.evaluate = max_requests, max_samples, evaluate
    session.flush()
    audit(
        session,
        "model",
        model.id,
        "forget_policy_set",
        tenant_id,
        method=method,
        params=clean,
        window_seconds=window_seconds,
        max_requests=max_requests,
        max_samples=max_samples,
        evaluate=evaluate,
    )
    return policy


def get_policy(session: Session, tenant_id: str, model_ref: str) -> ForgetPolicy | None:
    model = resolve_model(session, model_ref, tenant_id)
    return session.get(ForgetPolicy, model.id)


def pending_count(session: Session, model_id: str) -> int:
    return session.execute(
        select(func.count()).where(
            ForgetRequest.model_id == model_id, ForgetRequest.status == RequestStatus.pending
        )
    ).scalar_one()


def requests_query(
    session: Session, *, tenant_id: str, status: str | None, model_ref: str | None
) -> Select[tuple[ForgetRequest]]:
    """The tenant's requests matching the filters, unordered: the list pages through it by (created_at, id)."""
    stmt = select(ForgetRequest).where(ForgetRequest.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(ForgetRequest.status == status)
    if model_ref is not None:
        stmt = stmt.where(ForgetRequest.model_id == resolve_model(session, model_ref, tenant_id).id)
    return stmt
