"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "forget_ids"]])
    msg: str = Field(examples=["forget_ids has duplicates: 3 (1 in all)"])
    type: str = Field(examples=["value_error"])


class ErrorBody(BaseModel):
    """Every error answer: a message, or for bad input (422) one entry per bad field."""

    detail: str | list[ErrorItem] = Field(examples=["model 'demo2' not found"])


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid API key (X-API-Key)"},
    404: {"model": ErrorBody, "description": "unknown id, or another tenant's"},
    409: {
        "model": ErrorBody,
        "description": "conflict: name taken, job finished, key reused with another body",
    },
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "bad input, each bad field named"},
    429: {"model": ErrorBody, "description": "rate limit exceeded; see Retry-After"},
    503: {"model": ErrorBody, "description": "the database is unavailable; retry shortly"},
}


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(examples=["ok"])
    broker: str = Field(examples=["ok"])


class ModelCreate(In):
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: str = Field(description="registered data set name or id", examples=["digits"])
    arch: dict[str, Any] | None = Field(
        None, description="ArchSpec: form, width, head", examples=[{"width": 16}]
    )
    recipe: dict[str, Any] | None = Field(None, description="overrides of the data set's default recipe")
    seed: int = 0


class ModelCreated(BaseModel):
    job_id: str | None = Field(description="the training job; null for an uploaded checkpoint")
    model_id: str


class ModelPublic(BaseModel):
    id: str
    name: str | None
    dataset: str
    status: str
    made_by: str
    parent_id: str | None
    lineage: list[str]
    n_forgotten: int
    forgotten_sha256: str | None
    arch: dict[str, Any]
    recipe: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    job_id: str | None
    created_at: datetime


class ModelList(BaseModel):
    data: list[ModelPublic]
    count: int


SampleId = Annotated[StrictInt, Field(description="index in the data set's training split")]


class UnlearnCreate(In):
    model_id: str = Field(description="model id or name", examples=["demo"])
    forget_ids: list[SampleId] | None = Field(None, max_length=1_000_000, examples=[[3, 17, 42]])
    forget_class: int | None = Field(
        None, ge=0, description="forget every training sample of this class instead"
    )
    method: str = Field(examples=["finetune"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"epochs": 5, "lr": 0.001}])
    seed: int = 0
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    requested_by: str | None = Field(None, max_length=200, description="who asked (for the audit record)")


class UnlearnCreated(BaseModel):
    job_id: str
    forget_request_id: str


class JobPublic(BaseModel):
    id: str
    kind: str
    status: str
    progress: float
    progress_info: dict[str, Any]
    error: str | None
    attempts: int
    model_id: str | None
    forget_request_id: str | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class JobList(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="all matching jobs; data holds at most `limit` of them")


class MethodPublic(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]


class DatasetPublic(BaseModel):
    id: str
    name: str
    kind: str
    n_train: int
    n_test: int
    num_classes: int
    in_channels: int
    task: str


class ReferenceCreate(In):
    model_id: str | None = Field(
        None, description="model id or name: its data set, architecture and recipe", examples=["demo"]
    )
    dataset: str | None = Field(None, description="a data set instead of a model (with arch and recipe)")
    forget_ids: list[SampleId] = Field(max_length=1_000_000)
    n_models: int = Field(8, ge=1, le=512, examples=[8])
    arch: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = Field(None, description="overrides of the model's (or data set's) recipe")


class ReferenceCreated(BaseModel):
    job_id: str | None = Field(description="null when the set already had enough models: nothing was trained")
    reference_set_id: str


class ReferenceSetPublic(BaseModel):
    id: str
    dataset_id: str
    n_forget: int
    forget_sha256: str
    recipe_sha256: str
    arch: dict[str, Any]
    recipe: dict[str, Any]
    runs: dict[str, int] = Field(description="reference runs by job status")
    created_at: datetime


class EvaluationCreate(In):
    model_id: str = Field(examples=["demo"])
    forget_ids: list[SampleId] | None = Field(None, max_length=1_000_000)
    forget_class: int | None = Field(None, ge=0, description="evaluate forgetting every sample of this class")
    method: str = Field(examples=["finetune"])
    params: dict[str, Any] = Field(default_factory=dict)
    n_models: int | None = Field(
        None,
        ge=1,
        le=512,
        description="seeds of the method, and reference models needed; default: the fewest whose epsilon-hat "
        "ceiling reaches LETHE_TARGET_EPSILON_CEILING",
    )
    delta: float = Field(0.05, ge=0, lt=1)


class EvaluationCreated(BaseModel):
    job_id: str
    evaluation_id: str
    n_models: int | None = Field(None, description="models per group, as requested or chosen")
    warnings: list[str] = Field(
        default_factory=list, description="why this group size may not tell the method from retrain"
    )


class EvaluationPublic(BaseModel):
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


class EvaluationRow(BaseModel):
    """One line of the side-by-side table (the study's Table 1)."""

    evaluation_id: str
    method: str
    status: str
    epsilon_hat: float | str | None = None
    ci95: float | str | None = None
    n_samples: int | None = None
    n_reference: int | None = None
    n_unlearned: int | None = None
    n_infinite: int | None = None
    measure: str | None = Field(None, description="accuracy, or mae for regression data sets")
    retain: float | None = None
    retain_ci95: float | None = None
    forget: float | None = None
    forget_ci95: float | None = None
    test: float | None = None
    test_ci95: float | None = None
    cost_vs_retrain: float | None = None
    epsilon_ceiling: float | None = Field(None, description="largest finite epsilon these group sizes allow")
    n_at_ceiling: int | None = None
    censored: bool | None = Field(None, description="epsilon-hat at the ceiling or infinite: may be higher")
    epsilon_hat_ci95_models: list[float | str | None] | None = Field(
        None, description="[low, high] of epsilon-hat over a bootstrap of the models"
    )
    epsilon_hat_smooth: float | str | None = None


class EvaluationTable(BaseModel):
    data: list[EvaluationRow]
    count: int


class StudyCreate(In):
    model_id: str = Field(examples=["demo"])
    forget_ids: list[SampleId] | None = Field(None, max_length=1_000_000)
    forget_fraction: float | None = Field(
        None, gt=0, lt=1, description="draw this share of the training split"
    )
    methods: list[str] = Field(min_length=1, examples=[["none", "finetune", "retrain"]])
    n_models: int = Field(8, ge=1, le=512)
    delta: float = Field(0.05, ge=0, lt=1)
    seed: int = Field(0, description="seed of the forget-set draw with forget_fraction")


class StudyCreated(BaseModel):
    job_id: str
    study_id: str


class StudyPublic(BaseModel):
    id: str
    model_id: str
    reference_set_id: str
    methods: list[str]
    n_models: int
    status: str
    job_id: str
    evaluation_ids: list[str]
    created_at: datetime


class AuditEntry(BaseModel):
    at: datetime
    object_type: str
    object_id: str
    event: str
    detail: dict[str, Any]


class ForgetRequestPublic(BaseModel):
    """A deletion request and everything that happened to it."""

    id: str
    tenant: str
    requested_by: str | None
    created_at: datetime
    model_id: str
    n_ids: int
    ids_sha256: str
    method: str
    params: dict[str, Any]
    job_id: str | None
    status: str | None
    error: str | None
    result_model_id: str | None
    result_metrics: dict[str, Any] | None
    events: list[AuditEntry]


class ScorePublic(BaseModel):
    """Epsilon-hat of uploaded logits: per approach (a seed-layout zip) or `logits` (an .npz), the figures of
    `lethe epsilon --json`."""

    id: str
    input_format: str = Field(description="npz or seed_layout", examples=["seed_layout"])
    input_sha256: str = Field(description="sha256 of the uploaded file")
    input_bytes: int
    filename: str | None
    delta: float
    results: dict[str, dict[str, Any]]
    created_at: datetime


class ScoreList(BaseModel):
    data: list[ScorePublic]
    count: int


class LogitsCreate(In):
    """Which samples: `ids` of a split, a whole `split`, or the ids a forget request named (training split)."""

    ids: list[SampleId] | None = Field(None, min_length=1, max_length=1_000_000, examples=[[3, 17, 42]])
    split: Literal["train", "test"] | None = Field(
        None, description="the split `ids` index; alone, every sample of it", examples=["test"]
    )
    forget_request_id: str | None = Field(None, max_length=36, description="the ids a forget request named")


class LogitsCreated(BaseModel):
    job_id: str


class Spread(BaseModel):
    """A figure over several models: mean, 95% half-width (1.96 std / sqrt(n)) and count."""

    mean: float | None
    ci95: float | None
    n: int


class JobMetrics(BaseModel):
    """A finished job's figures; which ones depends on its kind, and the rest are null.

    train: train/test accuracy. unlearn: retain/forget/test accuracy (or *_mae for regression), the method,
    set sizes. reference: each figure as a Spread over the set's models. evaluate: epsilon-hat with its
    mean, half-width and counts ("inf" when infinite), cost relative to retraining. study: per-method rows.
    Further figures a server adds are kept as extra fields.
    """

    model_config = ConfigDict(extra="allow")
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
    epsilon_hat: float | str | None = None
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
    methods: dict[str, dict[str, Any]] | None = Field(None, description="a study's row per method")
