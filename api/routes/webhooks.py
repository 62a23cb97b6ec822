"""Webhooks: subscribe a URL to job events, list subscriptions and every delivery to them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import delete, func, select

from api.bodies import body_doc, json_body
from api.deps import SessionDep, TenantDep
from api.webhook_schemas import (
    DeliveryList,
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
)
from core import webhooks
from core.tables import Webhook, WebhookDelivery

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    summary="Subscribe a URL to job events",
    openapi_extra=body_doc(WebhookCreate),
)
def create_webhook(
    session: SessionDep, tenant: TenantDep, body: Annotated[WebhookCreate, json_body(WebhookCreate)]
) -> WebhookCreated:
    """Each subscribed event of the tenant's jobs is POSTed as JSON `{"event", "job"}` with `X-Lethe-Signature: sha256=<hex HMAC-SHA256 of the raw body keyed with the secret>`, retried with backoff until the receiver answers 2xx. Only http(s) URLs whose host resolves to public addresses (422 otherwise, unless LETHE_WEBHOOK_ALLOW_PRIVATE=true). The secret is shown only in this answer."""
    hook = webhooks.create_webhook(session, tenant, body.url, list(body.events))
    session.commit()
    return WebhookCreated.model_validate(hook, from_attributes=True)


@router.get("", response_model=WebhookList, summary="The tenant's webhooks")
def list_webhooks(session: SessionDep, tenant: TenantDep) -> WebhookList:
    """Every webhook of the caller's tenant, newest first; secrets are never shown again."""
    rows = session.execute(
        select(Webhook).where(Webhook.tenant_id == tenant).order_by(Webhook.created_at.desc())
    ).scalars()
    data = [WebhookPublic.model_validate(h, from_attributes=True) for h in rows]
    return WebhookList(data=data, count=len(data))


@router.get("/{webhook_id}", response_model=WebhookPublic, summary="A webhook (without its secret)")
def read_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> WebhookPublic:
    """The webhook's URL and events (its secret was shown once, when it was created)."""
    return WebhookPublic.model_validate(
        webhooks.get_webhook(session, webhook_id, tenant), from_attributes=True
    )


@router.delete("/{webhook_id}", status_code=204, summary="Unsubscribe (its pending deliveries are dropped)")
def delete_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    """Stop sending events to this URL; its delivery records go with it."""
    hook = webhooks.get_webhook(session, webhook_id, tenant)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, summary="Every delivery, newest first")
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    tenant: TenantDep,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryList:
    """Each event sent or to be sent to this webhook: its status, attempts, the last answer or error, a log of the latest attempts, and the exact body; count covers every match."""
    hook = webhooks.get_webhook(session, webhook_id, tenant)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    total = session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = session.execute(
        stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
    ).scalars()
    return DeliveryList(
        data=[DeliveryPublic.model_validate(d, from_attributes=True) for d in rows], count=total
    )
