"""Bodies of purge, tenant settings, deletion certificates and the audit export (kept apart from api/schemas.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes: mark them, so every reply carries its zone (RFC 3339)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_as_utc)]


class ModelPurged(BaseModel):
    """A purged model: its weights are gone, its checksum and lineage remain."""

    model_id: str
    name: str | None
    status: str = Field(examples=["purged"])
    purged_at: UtcTime | None
    checkpoint_sha256: str | None = Field(description="sha256 of the deleted checkpoint file")


class TenantSettingsPublic(BaseModel):
    auto_purge_parents: bool = Field(
        description="purge a model's weights as soon as a model unlearned from it is ready"
    )
    updated_at: UtcTime | None = Field(description="null while every setting has its default")


class TenantSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auto_purge_parents: StrictBool | None = Field(
        None, description="leave out to keep the current value", examples=[True]
    )


class PublicKey(BaseModel):
    algorithm: str = Field(examples=["Ed25519"])
    key_id: str = Field(description="first 16 hex digits of the sha256 of the raw public key")
    public_key: str = Field(description="the raw 32-byte public key, base64")
    pem: str = Field(description="the same key as a PEM SubjectPublicKeyInfo")


class Certificate(BaseModel):
    """A signed deletion certificate; `signature` covers every other field (see docs/certificates.md)."""

    model_config = ConfigDict(extra="allow")

    certificate: str = Field(examples=["lethe.deletion-certificate/v1"])
    signature: dict[str, Any]
