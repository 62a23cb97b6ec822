"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ml.methods.params import AUTO, METHOD_SPECS

INT32_MAX = 2**31 - 1
"""The largest value an INTEGER column holds; seeds and sample ids stay below it (numpy takes seeds < 2^32)."""
MAX_FORGET_IDS = 1_000_000
"""The most ids any request body may carry; a deployment's own limit (LETHE_MAX_FORGET_IDS) may be lower."""
NO_NUL = r"^[^\x00]*$"
"""Strings are stored in Postgres, whose text cannot hold a NUL character."""


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes: mark them, so every reply carries its time zone (RFC 3339)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _integral(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; bodies are validated strictly otherwise (no "3" for 3)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]
INTEGRAL = BeforeValidator(_integral)
"""Goes after an int's constraints, so that the schema still shows them (minimum, maximum)."""
ModelCount = Annotated[int, Field(ge=1, le=512), INTEGRAL]
Seed = Annotated[
    int,
    Field(ge=0, le=INT32_MAX, description="random seed, 0 to 2^31-1 (what the database and numpy hold)"),
    INTEGRAL,
]
Settings = Annotated[dict[str, Any], Field(json_schema_extra={"propertyNames": {"pattern": NO_NUL}})]
"""Free-form settings (a method's params, an architecture, a recipe), checked against their own schema."""
Ref = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL, description="an id or a name")]
MethodName = Literal[tuple(METHOD_SPECS)]  # type: ignore[valid-type]
"""A registered unlearning method: the schema lists them, so an unknown name is refused by the schema."""
UnlearnMethodName = Literal[(*METHOD_SPECS, AUTO)]  # type: ignore[valid-type]
"""What forgetting may ask for: a registered method, or "auto" (Lethe chooses one; params: AutoParams)."""


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
        "description": "conflict: name taken, job finished, key reused with another body, model not ready",
    },
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "bad input, each bad field named"},
    429: {
        "model": ErrorBody,
        "description": "rate limit, or the tenant's limit on queued work, exceeded; see Retry-After",
    },
    503: {"model": ErrorBody, "description": "the database is unavailable; retry shortly"},
}


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(examples=["ok"])
    broker: str = Field(examples=["ok"])


class ModelCreate(In):
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: Ref = Field(description="registered data set name or id", examples=["digits"])
    arch: Settings | None = Field(None, description="ArchSpec: form, width, head", examples=[{"width": 16}])
    recipe: Settings | None = Field(None, description="overrides of the data set's default recipe")
    seed: Seed = 0


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
    created_at: Timestamp


NEXT_CURSOR = Field(None, description="pass as `cursor` for the next page; null on the last page")


class ModelList(BaseModel):
    data: list[ModelPublic]
    count: int = Field(description="all matching models; data holds at most `limit` of them")
    next_cursor: str | None = NEXT_CURSOR


SampleId = Annotated[
    int,
    Field(ge=0, le=INT32_MAX, description="index in the data set's training split (below its n_train)"),
    INTEGRAL,
]
ForgetIds = Annotated[
    list[SampleId],
    Field(
        min_length=1,
        max_length=MAX_FORGET_IDS,
        json_schema_extra={"uniqueItems": True},
        description="distinct training-sample ids; at most LETHE_MAX_FORGET_IDS (default 50,000) per request",
    ),
]
ClassId = Annotated[
    int, Field(ge=0, le=INT32_MAX, description="a class of the data set (below its num_classes)"), INTEGRAL
]


EXACTLY_ONE = "give exactly one of the two, and omit the other"


class UnlearnCreate(In):
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["forget_ids"]}, {"required": ["forget_class"]}]}
    )

    model_id: Ref = Field(description="model id or name", examples=["demo"])
    forget_ids: ForgetIds = Field(None, examples=[[3, 17, 42]], description=f"or forget_class: {EXACTLY_ONE}")
    forget_class: ClassId = Field(None, description="forget every training sample of this class instead")
    method: UnlearnMethodName = Field(examples=["finetune"])
    params: Settings = Field(default_factory=dict, examples=[{"epochs": 5, "lr": 0.001}])
    seed: Seed = 0
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    requested_by: str | None = Field(
        None, max_length=200, pattern=NO_NUL, description="who asked (for the audit record)"
    )


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
    parent_id: str | None = Field(
        description="the job this one is a run of (an evaluation's seed, a study's evaluation); null for one of its own"
    )
    result: dict[str, Any] | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    updated_at: Timestamp


class JobList(BaseModel):
    data: list[JobPublic]
    count: int = Field(description="all matching jobs; data holds at most `limit` of them")
    next_cursor: str | None = NEXT_CURSOR


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


class DatasetList(BaseModel):
    data: list[DatasetPublic]
    count: int = Field(description="all the tenant's data sets; data holds at most `limit` of them")
    next_cursor: str | None = NEXT_CURSOR


class ReferenceCreate(In):
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["model_id"]}, {"required": ["dataset"]}]}
    )

    model_id: Ref = Field(
        None,
        description=f"model id or name: its data set, architecture and recipe; or dataset: {EXACTLY_ONE}",
        examples=["demo"],
    )
    dataset: Ref = Field(None, description="a data set instead of a model (with arch and recipe)")
    forget_ids: ForgetIds
    n_models: ModelCount = Field(8, examples=[8])
    arch: Settings | None = None
    recipe: Settings | None = Field(None, description="overrides of the model's (or data set's) recipe")


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
    created_at: Timestamp


class EvaluationCreate(In):
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["forget_ids"]}, {"required": ["forget_class"]}]}
    )

    model_id: Ref = Field(examples=["demo"])
    forget_ids: ForgetIds = Field(None, description=f"or forget_class: {EXACTLY_ONE}")
    forget_class: ClassId = Field(None, description="evaluate forgetting every sample of this class")
    method: MethodName = Field(examples=["finetune"])
    params: Settings = Field(default_factory=dict)
    n_models: ModelCount = Field(
        None,
        description="seeds of the method, and reference models needed; omit for the fewest whose epsilon-hat "
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
    created_at: Timestamp


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
    count: int = Field(description="all matching evaluations; data holds at most `limit` of them")
    next_cursor: str | None = NEXT_CURSOR


class StudyCreate(In):
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["forget_ids"]}, {"required": ["forget_fraction"]}]}
    )

    model_id: Ref = Field(examples=["demo"])
    forget_ids: ForgetIds = Field(None, description=f"or forget_fraction: {EXACTLY_ONE}")
    forget_fraction: float = Field(None, gt=0, lt=1, description="draw this share of the training split")
    methods: list[MethodName] = Field(
        min_length=1,
        max_length=len(METHOD_SPECS),
        json_schema_extra={"uniqueItems": True},
        examples=[["none", "finetune", "retrain"]],
    )
    n_models: ModelCount = 8
    delta: float = Field(0.05, ge=0, lt=1)
    seed: Seed = Field(0, description="seed of the forget-set draw with forget_fraction")


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
    created_at: Timestamp


class AuditEntry(BaseModel):
    at: Timestamp
    object_type: str
    object_id: str
    event: str
    detail: dict[str, Any]


class ForgetBatchInfo(BaseModel):
    """The batch job that took up a request: how many requests and ids it forgot, from which version."""

    job_id: str
    status: str
    base_model_id: str | None
    n_requests: int
    n_ids: int | None = Field(description="distinct ids of the batch, known once it ran")
    evaluation_id: str | None = Field(
        None, description="the evaluation queued beside it when its policy asks"
    )


class ForgetRequestPublic(BaseModel):
    """A deletion request and everything that happened to it."""

    id: str
    tenant: str
    requested_by: str | None
    created_at: Timestamp
    model_id: str
    n_ids: int
    ids_sha256: str
    method: str | None = Field(description="null until a batch takes up a request from POST /forget-requests")
    params: dict[str, Any]
    job_id: str | None
    status: str | None = Field(
        description="pending, scheduled, fulfilled, failed or rejected for a request from POST /forget-requests; "
        "its job's status for one from POST /unlearn"
    )
    error: str | None
    result_model_id: str | None
    result_metrics: dict[str, Any] | None
    events: list[AuditEntry]
    external_ref: str | None = None
    batch: ForgetBatchInfo | None = None


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
    created_at: Timestamp


class ScoreList(BaseModel):
    data: list[ScorePublic]
    count: int = Field(description="all the tenant's scores; data holds at most `limit` of them")
    next_cursor: str | None = NEXT_CURSOR


class LogitsCreate(In):
    """Which samples: `ids` of a split, a whole `split`, or the ids a forget request named (training split)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["ids"], "not": {"required": ["forget_request_id"]}},
                {
                    "required": ["split"],
                    "not": {"anyOf": [{"required": ["ids"]}, {"required": ["forget_request_id"]}]},
                },
                {
                    "required": ["forget_request_id"],
                    "not": {"anyOf": [{"required": ["ids"]}, {"required": ["split"]}]},
                },
            ]
        }
    )

    ids: Annotated[list[SampleId], Field(min_length=1, max_length=MAX_FORGET_IDS)] = Field(
        None, examples=[[3, 17, 42]], description="with or without split; not with forget_request_id"
    )
    split: Literal["train", "test"] = Field(
        None, description="the split `ids` index; alone, every sample of it", examples=["test"]
    )
    forget_request_id: str = Field(
        None, max_length=36, pattern=NO_NUL, description="the ids a forget request named; alone"
    )


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
    method_details: dict[str, Any] | None = Field(
        None,
        description="what the method decided while running (ssd: the alpha its guard used, null when it "
        "left the weights unchanged; gradient_ascent: the lr it climbed at)",
    )
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


class ForgetRequestCreate(In):
    model_id: str = Field(
        description="model id or name; its forget policy decides when and how", examples=["demo"]
    )
    forget_ids: list[SampleId] | None = Field(None, max_length=1_000_000, examples=[[3, 17, 42]])
    forget_class: int | None = Field(
        None, ge=0, description="forget every training sample of this class instead"
    )
    requested_by: str | None = Field(None, max_length=200, description="who asked (for the audit record)")
    external_ref: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="your own id for the request: sending it again returns the same request",
        examples=["ticket-4711"],
    )


class ForgetRequestCreated(BaseModel):
    forget_request_id: str
    status: str = Field(examples=["pending"])


class ForgetRequestRow(BaseModel):
    id: str
    model_id: str
    status: str | None
    external_ref: str | None
    requested_by: str | None
    n_ids: int
    created_at: Timestamp
    job_id: str | None
    result_model_id: str | None
    reason: str | None


class ForgetRequestList(BaseModel):
    data: list[ForgetRequestRow]
    count: int = Field(description="all matching requests; data holds at most `limit` of them")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class ForgetPolicyIn(In):
    method: UnlearnMethodName = Field(examples=["finetune"])
    params: Settings = Field(default_factory=dict, examples=[{"epochs": 2}])
    window_seconds: float = Field(
        3600.0, ge=0, le=30 * 86400, description="a batch starts this long after its oldest pending request"
    )
    max_requests: Annotated[int, Field(ge=1, le=10**9), INTEGRAL] | None = Field(
        None, description="start a batch early once this many are pending"
    )
    max_samples: Annotated[int, Field(ge=1, le=10**9), INTEGRAL] | None = Field(
        None, description="start a batch early once this many ids are pending"
    )
    evaluate: bool = Field(
        False,
        description="queue beside each batch an evaluation (epsilon-hat) of the method on the batch's new ids "
        "from the version it starts from",
    )


class ForgetPolicyPublic(BaseModel):
    model_id: str
    method: str
    params: dict[str, Any]
    window_seconds: float
    max_requests: int | None
    max_samples: int | None
    evaluate: bool
    head_model_id: str | None = Field(description="the newest version, where the next batch starts")
    running_job_id: str | None = Field(description="the batch in flight, if any")
    pending: int = Field(description="requests waiting for a batch")
    updated_at: Timestamp
