"""ORM tables (SQLAlchemy 2 typed mapping). The schema is created only by Alembic migrations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_TENANT = "local"


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class ModelStatus(StrEnum):
    training = "training"
    ready = "ready"
    failed = "failed"
    cancelled = "cancelled"
    """Its training job was cancelled: no weights, as failed, but nothing went wrong."""
    purged = "purged"


class Dataset(Base):
    """A registered data set: a loader kind plus where its files are; its sizes bound the sample ids."""

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(50))
    root: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    in_channels: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(20), default="classification")
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("uq_datasets_tenant_name", "tenant_id", "name", unique=True),)


class Model(Base):
    """A checkpoint with lineage: parent and the cumulative set of forgotten sample ids."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    arch: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default=ModelStatus.training)
    made_by: Mapped[str] = mapped_column(String(50), default="train")
    forgotten_ids: Mapped[bytes | None] = mapped_column(LargeBinary)
    n_forgotten: Mapped[int] = mapped_column(Integer, default=0)
    forgotten_sha256: Mapped[str | None] = mapped_column(String(64))
    checkpoint: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    """sha256 of the stored checkpoint file; kept after a purge deletes the file."""
    purged_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (Index("uq_models_tenant_name", "tenant_id", "name", unique=True),)


class ForgetRequest(Base):
    """A deletion request as received: who, when, which ids (compact + sha256). Never deleted."""

    __tablename__ = "forget_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    ids: Mapped[bytes] = mapped_column(LargeBinary)
    n_ids: Mapped[int] = mapped_column(Integer)
    ids_sha256: Mapped[str] = mapped_column(String(64), index=True)
    method: Mapped[str | None] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    job_id: Mapped[str | None] = mapped_column(String(36))
    result_model_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str | None] = mapped_column(String(20))
    """RequestStatus of a request taken in by POST /forget-requests; null for POST /unlearn (its job says)."""
    external_ref: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        Index("uq_forget_requests_tenant_external_ref", "tenant_id", "external_ref", unique=True),
        Index("ix_forget_requests_status_model", "status", "model_id", "created_at"),
    )


class Job(Base):
    """Unit of background work. Postgres holds the truth; Celery only carries the id."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    kind: Mapped[str] = mapped_column(String(30), index=True)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    model_id: Mapped[str | None] = mapped_column(String(36), index=True)
    forget_request_id: Mapped[str | None] = mapped_column(String(36))
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """Append-only record of each state change."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(50))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    __table_args__ = (Index("ix_audit_events_object", "object_type", "object_id"),)


class ReferenceSet(Base):
    """Models retrained from scratch without a forget set, shared by every evaluation with the same key.

    The key is (data set, sha256 of the sorted forget ids, recipe) where the recipe also covers the
    architecture and the ids the source model had already forgotten (they are never trained on either).
    """

    __tablename__ = "reference_sets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    forget_ids: Mapped[bytes] = mapped_column(LargeBinary)
    n_forget: Mapped[int] = mapped_column(Integer)
    forget_sha256: Mapped[str] = mapped_column(String(64))
    excluded_ids: Mapped[bytes | None] = mapped_column(LargeBinary)
    arch: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipe: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipe_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        Index(
            "uq_reference_sets_key", "tenant_id", "dataset_id", "forget_sha256", "recipe_sha256", unique=True
        ),
    )


class Run(Base):
    """One trained or unlearned model of a many-seed protocol, kept as its forget-set outputs and accuracies."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    kind: Mapped[str] = mapped_column(String(20))
    reference_set_id: Mapped[str | None] = mapped_column(ForeignKey("reference_sets.id"), index=True)
    evaluation_id: Mapped[str | None] = mapped_column(ForeignKey("evaluations.id"), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    outputs: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """How well a method forgot: its N seeded runs against a reference set, scored by epsilon-hat."""

    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    reference_set_id: Mapped[str] = mapped_column(ForeignKey("reference_sets.id"), index=True)
    study_id: Mapped[str | None] = mapped_column(ForeignKey("studies.id"), index=True)
    method: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_models: Mapped[int] = mapped_column(Integer)
    delta: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str] = mapped_column(String(36))
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Study(Base):
    """The study's protocol in one request: one reference set and several methods' evaluations."""

    __tablename__ = "studies"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    reference_set_id: Mapped[str] = mapped_column(ForeignKey("reference_sets.id"))
    methods: Mapped[list[str]] = mapped_column(JSON)
    n_models: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Tenant(Base):
    """Who owns objects: every model, job, request and evaluation belongs to exactly one tenant."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, stored as the sha256 of the secret (keys are random, so a fast hash suffices)."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class IdempotencyKey(Base):
    """The answer given to a request with an Idempotency-Key, replayed for the same key and body."""

    __tablename__ = "idempotency_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(200))
    body_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("uq_idempotency_keys_tenant_key", "tenant_id", "key", unique=True),)


class Score(Base):
    """Epsilon-hat of logits made elsewhere (POST /scores): the figures and the sha256 of what was sent."""

    __tablename__ = "scores"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    input_format: Mapped[str] = mapped_column(String(20))
    input_sha256: Mapped[str] = mapped_column(String(64))
    input_bytes: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str | None] = mapped_column(String(200))
    delta: Mapped[float] = mapped_column(Float)
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DashboardSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its sha256."""

    __tablename__ = "dashboard_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()


class TenantSettings(Base):
    """Per-tenant choices that change what the service does on its own (absent row: every default)."""

    __tablename__ = "tenant_settings"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    auto_purge_parents: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Webhook(Base):
    """A tenant's subscription: job events POSTed, signed with its secret, to a URL."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: the exact body sent, and every attempt to send it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(50))
    job_id: Mapped[str] = mapped_column(String(36))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)


class RequestStatus(StrEnum):
    pending = "pending"
    scheduled = "scheduled"
    fulfilled = "fulfilled"
    failed = "failed"
    rejected = "rejected"


class ForgetPolicy(Base):
    """How and when a model's pending forget requests are forgotten together, and the batch running now."""

    __tablename__ = "forget_policies"
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    method: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    window_seconds: Mapped[float] = mapped_column(Float)
    max_requests: Mapped[int | None] = mapped_column(Integer)
    max_samples: Mapped[int | None] = mapped_column(Integer)
    evaluate: Mapped[bool] = mapped_column(Boolean, default=False)
    head_model_id: Mapped[str | None] = mapped_column(String(36))
    """The newest version of the lineage, where the next batch starts; null until the first batch succeeds."""
    running_job_id: Mapped[str | None] = mapped_column(String(36))
    """The batch in flight: set by a conditional update, so one model never has two at once."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
