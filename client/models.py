"""What the API answers, as pydantic models mirroring api/schemas.py without needing the server's code.

Unknown fields are kept (extra="allow") so a newer server's additions survive a round trip through
`model_dump`.

Annotations are evaluated as each class is defined (no `from __future__ import annotations`), so a model
refers only to models above it: pydantic takes them as they are instead of evaluating some 200 annotation
strings when the module is imported (about 1% of `lethe jobs list`'s start, benchmarks/bench_cli.py).
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class Out(BaseModel):
    # Each model's validator is built when first used, not on import: a command uses two or three of them.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), defer_build=True)


class Health(Out):
    status: str
    database: str
    broker: str

    @property
    def ok(self) -> bool:
        """Whether the service can take work (the server answers 503 otherwise)."""
        return self.status == "ok"


class ModelCreated(Out):
    job_id: str | None = Field(description="the training job; null for an uploaded checkpoint")
    model_id: str


class Model(Out):
    id: str
    name: str | None
    dataset: str
    status: str
    made_by: str
    parent_id: str | None
    lineage: list[str] = Field(description="ids from this model up to its root ancestor")
    n_forgotten: int
    forgotten_sha256: str | None
    arch: dict[str, Any]
    recipe: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    job_id: str | None
    created_at: datetime


class ModelList(Out):
    data: list[Model]
    count: int
    next_cursor: str | None = None


class UnlearnCreated(Out):
    job_id: str
    forget_request_id: str


class AuditEntry(Out):
    at: datetime
    object_type: str
    object_id: str
    event: str
    detail: dict[str, Any]


class ForgetBatchInfo(Out):
    """The batch job that took up a request: how many requests and ids it forgot, from which version."""

    job_id: str
    status: str
    base_model_id: str | None
    n_requests: int
    n_ids: int | None
    evaluation_id: str | None = None


class ForgetRequest(Out):
    """A deletion request and everything that happened to it: the audit view."""

    id: str
    tenant: str
    requested_by: str | None
    created_at: datetime
    model_id: str
    n_ids: int
    ids_sha256: str
    method: str | None
    params: dict[str, Any]
    job_id: str | None
    status: str | None
    error: str | None
    result_model_id: str | None
    result_metrics: dict[str, Any] | None
    events: list[AuditEntry]
    external_ref: str | None = None
    batch: ForgetBatchInfo | None = None


class Job(Out):
    id: str
    kind: str
    status: str
    progress: float
    progress_info: dict[str, Any] = Field(
        description="stage, epoch, epochs, loss, eta_seconds ...; finished and total for fan-out jobs"
    )
    error: str | None
    attempts: int
    model_id: str | None
    forget_request_id: str | None
    parent_id: str | None = Field(
        None, description="the job this one is a run of; null for one of its own (and from older servers)"
    )
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """Whether the job has reached a final state (succeeded, failed or cancelled)."""
        return self.status in FINISHED


class JobList(Out):
    data: list[Job]
    count: int
    next_cursor: str | None = None


class Method(Out):
    name: str
    description: str
    params_schema: dict[str, Any]


class Dataset(Out):
    id: str
    name: str
    kind: str
    n_train: int
    n_test: int
    num_classes: int
    in_channels: int
    task: str


class DatasetList(Out):
    data: list[Dataset]
    count: int
    next_cursor: str | None = None


class ReferenceCreated(Out):
    job_id: str | None = Field(description="null when the set already had enough models: nothing was trained")
    reference_set_id: str


class ReferenceSet(Out):
    id: str
    dataset_id: str
    n_forget: int
    forget_sha256: str
    recipe_sha256: str
    arch: dict[str, Any]
    recipe: dict[str, Any]
    runs: dict[str, int] = Field(description="reference runs by job status")
    created_at: datetime


class EvaluationCreated(Out):
    job_id: str
    evaluation_id: str
    n_models: int | None = None
    warnings: list[str] = Field(default_factory=list)


class Evaluation(Out):
    id: str
    model_id: str
    reference_set_id: str
    study_id: str | None
    method: str
    params: dict[str, Any]
    n_models: int
    delta: float
    status: str
    job_id: str
    results: dict[str, Any] | None
    created_at: datetime


class EvaluationRow(Out):
    """One line of the side-by-side table (the study's Table 1); epsilon-hat may be "inf"."""

    evaluation_id: str
    method: str
    status: str
    epsilon_hat: float | str | None = None
    ci95: float | str | None = None
    n_samples: int | None = None
    n_reference: int | None = None
    n_unlearned: int | None = None
    n_infinite: int | None = None
    measure: str | None = None
    retain: float | None = None
    retain_ci95: float | None = None
    forget: float | None = None
    forget_ci95: float | None = None
    test: float | None = None
    test_ci95: float | None = None
    cost_vs_retrain: float | None = None
    epsilon_ceiling: float | None = None
    n_at_ceiling: int | None = None
    censored: bool | None = None
    epsilon_hat_ci95_models: list[float | str | None] | None = None
    epsilon_hat_smooth: float | str | None = None


class EvaluationTable(Out):
    data: list[EvaluationRow]
    count: int
    next_cursor: str | None = None


class StudyCreated(Out):
    job_id: str
    study_id: str


class Study(Out):
    id: str
    model_id: str
    reference_set_id: str
    methods: list[str]
    n_models: int
    status: str
    job_id: str
    evaluation_ids: list[str]
    created_at: datetime


class Spread(Out):
    """A figure over several models: mean, 95% half-width (1.96 std / sqrt(n)) and count."""

    mean: float | None
    ci95: float | None
    n: int


class JobMetrics(Out):
    """A finished job's figures; which ones depends on its kind (see the server's JobMetrics), the rest are None."""

    train_accuracy: float | Spread | None = None
    retain_accuracy: float | Spread | None = None
    forget_accuracy: float | Spread | None = None
    test_accuracy: float | Spread | None = None
    retain_mae: float | Spread | None = None
    forget_mae: float | Spread | None = None
    test_mae: float | Spread | None = None
    mia_efficacy: float | None = None
    wall_seconds: float | Spread | None = None
    method_finished_at: datetime | None = None
    method: str | None = None
    n_train: int | None = None
    n_retain: int | None = None
    n_forget: int | None = None
    n_models: int | None = None
    method_details: dict[str, Any] | None = Field(
        None, description="what the method decided while running (ssd: alpha; gradient_ascent: lr)"
    )
    epsilon_hat: float | str | None = Field(None, description='"inf" when infinite')
    mean: float | str | None = None
    ci95: float | str | None = None
    n_samples: int | None = None
    n_reference: int | None = None
    n_unlearned: int | None = None
    n_infinite: int | None = None
    n_nan: int | None = None
    delta: float | None = None
    cost_vs_retrain: float | None = None
    budget_vs_retrain: float | None = None
    kl_to_reference: float | None = None
    methods: dict[str, dict[str, Any]] | None = None


class Webhook(Out):
    id: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="key of the X-Lethe-Signature HMAC; shown only once")


class WebhookList(Out):
    data: list[Webhook]
    count: int


class Delivery(Out):
    id: str
    webhook_id: str
    event: str
    job_id: str
    status: str
    attempts: int
    response_status: int | None
    error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[dict[str, Any]]
    body: str


class DeliveryList(Out):
    data: list[Delivery]
    count: int


class LogitsCreated(Out):
    job_id: str


class Score(Out):
    """Epsilon-hat of uploaded logits: per approach (a seed-layout zip) or under `logits` (an .npz)."""

    id: str
    input_format: str
    input_sha256: str
    input_bytes: int
    filename: str | None
    delta: float
    results: dict[str, dict[str, Any]]
    created_at: datetime


class ScoreList(Out):
    data: list[Score]
    count: int
    next_cursor: str | None = None
