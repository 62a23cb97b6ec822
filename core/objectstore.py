"""The artifact store on an S3-compatible object store (AWS S3, MinIO, moto), through boto3.

A write is one PUT below `multipart_threshold`, else a multipart upload: S3 makes an object visible only
when a PUT has received its whole body or a multipart upload is completed, and boto3 aborts a multipart
upload that fails, so a cut-off upload never shows up as an artifact. Each object carries the sha256 of
its bytes as user metadata (x-amz-meta-sha256), checked on every read.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.artifacts import ArtifactCorrupt, ArtifactError, ArtifactMissing, ArtifactStore, key_parts
from core.settings import Settings

CHECKSUM = "sha256"
"""User-metadata key holding the hex sha256 of an object's bytes."""

MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Store(ArtifactStore):
    """Keys live under s3://bucket/prefix/; reads return the bytes once, never a second copy."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = 256 * 1024 * 1024,
        multipart_chunksize: int = 16 * 1024 * 1024,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        # Parts are copied into memory as they go out: at most 4 queued and 4 in flight bounds that copy.
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=4,
            preferred_transfer_client="classic",
        )
        self.transfer.max_in_memory_upload_chunks = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        url = urlsplit(settings.artifact_url)
        if not url.netloc:
            raise ValueError(
                f"LETHE_ARTIFACT_URL {settings.artifact_url!r} names no bucket (s3://bucket/prefix)"
            )
        session = boto3.session.Session()
        credentials: dict[str, str] = {}
        if settings.s3_access_key_id:
            credentials = {
                "aws_access_key_id": settings.s3_access_key_id,
                "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
            }
        client = session.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region or session.region_name or "us-east-1",
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
                # MinIO and other self-hosted stores are addressed by path: no wildcard DNS needed.
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            ),
            **credentials,
        )
        return cls(client, url.netloc, url.path)

    def object_key(self, key: str) -> str:
        return "/".join((self.prefix, *key_parts(key))) if self.prefix else "/".join(key_parts(key))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def write_bytes(self, key: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.client.upload_fileobj(
                io.BytesIO(data),  # shares data's buffer: no copy
                self.bucket,
                self.object_key(key),
                ExtraArgs={"Metadata": {CHECKSUM: digest}},
                Config=self.transfer,
            )
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise ArtifactError(
                f"storing {self.url(key)} failed; nothing new is visible under that key: {exc}"
            ) from exc
        return key

    def read_bytes(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            data = obj["Body"].read()
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                raise ArtifactMissing(f"artifact {self.url(key)} not found") from exc
            raise ArtifactError(f"reading {self.url(key)} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactError(f"reading {self.url(key)} failed: {exc}") from exc
        expected = obj.get("Metadata", {}).get(CHECKSUM)
        if expected is None:
            raise ArtifactCorrupt(f"{self.url(key)} has no {CHECKSUM} metadata, so it cannot be verified")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ArtifactCorrupt(
                f"{self.url(key)}: sha256 of the bytes read is {actual}, written as {expected}"
            )
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _code(exc) in MISSING_CODES:
                return False
            raise ArtifactError(f"checking {self.url(key)} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactError(f"checking {self.url(key)} failed: {exc}") from exc
        return True

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.object_key(key),
                Body=data,
                Metadata={CHECKSUM: hashlib.sha256(data).hexdigest()},
                IfNoneMatch="*",  # a conditional write: the store refuses it once the key exists
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise ArtifactError(f"storing {self.url(key)} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactError(f"storing {self.url(key)} failed: {exc}") from exc
        return True

    def delete(self, key: str) -> bool:
        existed = self.exists(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactError(f"deleting {self.url(key)} failed: {exc}") from exc
        return existed


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
