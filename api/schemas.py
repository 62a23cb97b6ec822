"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt


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
    job_id: str
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
    forget_ids: list[SampleId] = Field(max_length=1_000_000, examples=[[3, 17, 42]])
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
