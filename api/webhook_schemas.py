"""Request and response bodies of /webhooks (kept apart from api/schemas.py, which every route shares)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import Timestamp
from core.webhooks import DEFAULT_EVENTS, EVENTS

WebhookEvent = Literal[EVENTS]  # type: ignore[valid-type]
HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00]+$"
"""Only http(s) URLs can receive webhooks: the schema says so, so another scheme is refused before any lookup."""


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1,
        max_length=2000,
        pattern=HTTP_URL,
        description="http(s) URL that receives the events as POSTed JSON",
        examples=["https://hooks.example.com/lethe"],
    )
    events: list[WebhookEvent] = Field(  # type: ignore[valid-type]
        default=list(DEFAULT_EVENTS),
        min_length=1,
        max_length=len(EVENTS),
        description="job events to send",
        examples=[["job.succeeded", "job.failed"]],
    )


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: Timestamp


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="key of the X-Lethe-Signature HMAC-SHA256 over each raw body; shown only this once"
    )


class WebhookList(BaseModel):
    data: list[WebhookPublic]
    count: int


class DeliveryPublic(BaseModel):
    id: str
    webhook_id: str
    event: str
    job_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    response_status: int | None = Field(description="HTTP status of the last attempt, if it got an answer")
    error: str | None = Field(description="why the last attempt failed, if it did")
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    delivered_at: Timestamp | None
    log: list[dict[str, Any]] = Field(description="the latest attempts: time, status, error, milliseconds")
    body: str = Field(description="the exact JSON body sent (and signed)")


class DeliveryList(BaseModel):
    data: list[DeliveryPublic]
    count: int
