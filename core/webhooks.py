"""Webhooks: job events POSTed to a tenant's URL, signed with its secret, retried with backoff, recorded.

A job's state change writes one delivery row per subscribed webhook in the same transaction (an outbox):
no event is lost, none is sent for a change that rolled back, and sending never holds up the change.
Workers send due deliveries from a background loop (worker/webhooks.py); any number of them may run, as
each delivery is claimed by a conditional update before it is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from pydantic_core import to_json
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import InvalidInput, NotFound
from core.settings import get_settings
from core.tables import Job, Webhook, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

JOB_EVENTS = {
    "queued": "job.queued",
    "running": "job.started",
    "succeeded": "job.succeeded",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
}
"""Audit event of a job -> the webhook event it sends."""
EVENTS = tuple(JOB_EVENTS.values())
DEFAULT_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")

JOB_FIELDS = (
    "id",
    "kind",
    "status",
    "progress",
    "progress_info",
    "error",
    "attempts",
    "model_id",
    "forget_request_id",
    "parent_id",
    "result",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
"""The job as GET /jobs/{id} shows it (tests/api/test_webhooks.py keeps the two equal)."""

SIGNATURE_HEADER = "X-Lethe-Signature"
LOG_KEEP = 20
"""Attempts kept in a delivery's log (its counters cover all of them)."""


class RefusedTarget(ValueError):
    """A webhook URL that must not be called: wrong scheme, unresolvable, or a non-public address."""


def sign(secret: str, body: bytes) -> str:
    """The X-Lethe-Signature value: `sha256=` and the hex HMAC-SHA256 of the raw body keyed with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_target(url: str, *, allow_private: bool) -> None:
    """http(s) only; every address the host resolves to must be public unless private ones are allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedTarget(f"only http and https URLs can receive webhooks, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise RefusedTarget("the URL names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise RefusedTarget(f"host {parts.hostname!r} does not resolve ({exc})") from None
    if allow_private:
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise RefusedTarget(
                f"host {parts.hostname!r} resolves to {address}, a loopback, link-local, private or reserved "
                "address (LETHE_WEBHOOK_ALLOW_PRIVATE=true allows them)"
            )


def create_webhook(session: Session, tenant_id: str, url: str, events: list[str]) -> Webhook:
    """A new subscription with a fresh secret; 422 naming what is wrong with the URL or events."""
    try:
        check_target(url, allow_private=get_settings().webhook_allow_private)
    except RefusedTarget as exc:
        raise InvalidInput("url", f"url: {exc}") from None
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise InvalidInput("events", f"events: unknown {unknown}; valid: {', '.join(EVENTS)}")
    hook = Webhook(
        tenant_id=tenant_id, url=url, events=list(dict.fromkeys(events)), secret=secrets.token_hex(32)
    )
    session.add(hook)
    session.flush()
    return hook


def get_webhook(session: Session, webhook_id: str, tenant_id: str) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.tenant_id != tenant_id:
        raise NotFound(f"webhook {webhook_id} not found")
    return hook


def record_job_event(session: Session, tenant_id: str, job_id: str, audit_event: str) -> None:
    """Queue a delivery of this job event to each of the tenant's webhooks that subscribed to it.

    Top-level jobs only: the runs an evaluation fans out into would flood a receiver.
    """
    event = JOB_EVENTS.get(audit_event)
    if event is None:
        return
    # Webhooks are written by requests of their own (create_webhook flushes), so this read needs no flush
    # first: a job just added goes out with its events in the caller's one flush, or below for a webhook.
    with session.no_autoflush:
        found = session.execute(select(Webhook.id, Webhook.events).where(Webhook.tenant_id == tenant_id))
        hooks = [h for h in found if event in h.events]
    if not hooks:
        return
    columns = [getattr(Job, name) for name in JOB_FIELDS]
    row = session.execute(select(Job.parent_id, *columns).where(Job.id == job_id)).one_or_none()
    if row is None or row.parent_id is not None:
        return
    # pydantic's JSON, so timestamps and numbers read exactly as GET /jobs/{id} writes them.
    body = to_json({"event": event, "job": {name: getattr(row, name) for name in JOB_FIELDS}}).decode()
    for hook in hooks:
        session.add(
            WebhookDelivery(
                webhook_id=hook.id, tenant_id=tenant_id, event=event, job_id=job_id, body=body, log=[]
            )
        )


def retry_delay(attempts: int) -> timedelta:
    """Wait after the n-th failed attempt: the base, then three times longer each time, at most 6 hours."""
    return timedelta(seconds=min(get_settings().webhook_retry_seconds * 3 ** (attempts - 1), 6 * 3600))


def _claim(limit: int) -> list[tuple[str, str, str, str, str]]:
    """Due deliveries, each leased to this process by pushing its next attempt past the send timeout."""
    now = utcnow()
    lease = now + timedelta(seconds=get_settings().webhook_timeout_seconds + 30)
    claimed = []
    with session_scope() as session:
        due = session.execute(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).scalars()
        for delivery_id in list(due):
            # Conditional: of two processes that saw it due, only the first moves it past `now`.
            moved = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                )
                .values(next_attempt_at=lease)
            ).rowcount
            if moved:
                row = session.execute(
                    select(WebhookDelivery.event, WebhookDelivery.body, Webhook.url, Webhook.secret)
                    .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                    .where(WebhookDelivery.id == delivery_id)
                ).one()
                claimed.append((delivery_id, row.event, row.body, row.url, row.secret))
    return claimed


def _send(
    http: httpx.Client, delivery_id: str, event: str, body: str, url: str, secret: str
) -> tuple[int | None, str | None]:
    """One POST: (HTTP status or None, error or None); never raises for the receiver's faults."""
    settings = get_settings()
    try:
        check_target(url, allow_private=settings.webhook_allow_private)
        raw = body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Lethe-Webhooks/1",
            "X-Lethe-Event": event,
            "X-Lethe-Delivery": delivery_id,
            SIGNATURE_HEADER: sign(secret, raw),
        }
        response = http.post(url, content=raw, headers=headers, timeout=settings.webhook_timeout_seconds)
    except RefusedTarget as exc:
        return None, f"refused: {exc}"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return response.status_code, None
    return response.status_code, f"answered {response.status_code}"


def _record(delivery_id: str, status_code: int | None, error: str | None, started: float) -> None:
    """Count the attempt and log it: delivered, failed for good, or due again after the backoff."""
    now = utcnow()
    with session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:
            return  # the webhook was deleted while this attempt was under way
        row.attempts += 1
        row.response_status, row.error = status_code, error
        entry = {"at": now.isoformat(), "status": status_code, "error": error}
        row.log = [*row.log, {**entry, "ms": round(1000 * (time.monotonic() - started))}][-LOG_KEEP:]
        if error is None:
            row.status, row.delivered_at, row.next_attempt_at = "delivered", now, None
        elif row.attempts >= get_settings().webhook_max_attempts:
            row.status, row.next_attempt_at = "failed", None
        else:
            row.next_attempt_at = now + retry_delay(row.attempts)


def deliver_due(http: httpx.Client, limit: int = 20) -> int:
    """Send the deliveries that are due; returns how many were attempted."""
    claimed = _claim(limit)
    for delivery_id, event, body, url, secret in claimed:
        started = time.monotonic()
        status_code, error = _send(http, delivery_id, event, body, url, secret)
        if error:
            log.info("webhook delivery %s to %s: %s", delivery_id, url, error)
        _record(delivery_id, status_code, error, started)
    return len(claimed)
