"""Python client of the Lethe API: `Client(url, api_key)` (or `AsyncClient`) returns pydantic objects and raises
LetheErrors. It needs only httpx and pydantic (client/pyproject.toml builds it as the `lethe-client` package).

`AsyncClient` is imported from client.aio when first named, so that a program using only `Client` does not
import asyncio."""

from typing import TYPE_CHECKING, Any

from client.client import API_KEY_HEADER, DEFAULT_URL, IDEMPOTENCY_HEADER, Client
from client.errors import (
    Conflict,
    ConnectionFailed,
    FieldError,
    InvalidRequest,
    LetheError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    WaitTimeout,
)
from client.models import (
    FINISHED,
    AuditEntry,
    Dataset,
    Delivery,
    DeliveryList,
    Evaluation,
    EvaluationCreated,
    EvaluationRow,
    EvaluationTable,
    ForgetRequest,
    Health,
    Job,
    JobList,
    JobMetrics,
    Method,
    Model,
    ModelCreated,
    ModelList,
    ReferenceCreated,
    ReferenceSet,
    Spread,
    Study,
    StudyCreated,
    UnlearnCreated,
    Webhook,
    WebhookCreated,
    WebhookList,
)

if TYPE_CHECKING:
    from client.aio import AsyncClient


def __getattr__(name: str) -> Any:
    if name == "AsyncClient":
        from client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_URL",
    "FINISHED",
    "IDEMPOTENCY_HEADER",
    "AsyncClient",
    "AuditEntry",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "Delivery",
    "DeliveryList",
    "Evaluation",
    "EvaluationCreated",
    "EvaluationRow",
    "EvaluationTable",
    "FieldError",
    "ForgetRequest",
    "Health",
    "InvalidRequest",
    "Job",
    "JobList",
    "JobMetrics",
    "LetheError",
    "Method",
    "Model",
    "ModelCreated",
    "ModelList",
    "NotFound",
    "RateLimited",
    "ReferenceCreated",
    "ReferenceSet",
    "ServerError",
    "Spread",
    "Study",
    "StudyCreated",
    "Unauthorized",
    "UnlearnCreated",
    "WaitTimeout",
    "Webhook",
    "WebhookCreated",
    "WebhookList",
]
