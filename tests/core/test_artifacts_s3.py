"""The artifact store on a real S3-compatible HTTP server (moto's server mode, started here): round trips,
checksums verified on read, uploads cut off midway never visible, and a real job's checkpoints there."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from core.artifacts import ArtifactCorrupt, ArtifactError, ArtifactMissing, get_store
from core.objectstore import S3Store
from tests.core.s3server import CREDENTIALS, CuttingProxy, moto_server, s3_client
from tests.utils import configure


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    name = f"lethe-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(endpoint: str) -> Iterator[CuttingProxy]:
    p = CuttingProxy(urlsplit(endpoint).port)
    yield p
    p.close()


def _store(endpoint: str, bucket: str, **kwargs) -> S3Store:
    return S3Store(s3_client(endpoint), bucket, "pre/fix", **kwargs)


def _keys(endpoint: str, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_settings_choose_the_object_store_and_it_round_trips(endpoint, bucket, tmp_path, monkeypatch):
    configure(
        monkeypatch,
        home=tmp_path / "home",
        artifact_url=f"s3://{bucket}/runs/a",
        s3_endpoint_url=endpoint,
        s3_access_key_id="lethe-key",
        s3_secret_access_key="lethe-secret",
    )
    store = get_store()
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == (bucket, "runs/a")
    assert store.client._request_signer._credentials.access_key == "lethe-key"  # LETHE_S3_* over AWS_*
    store.write_array("reference_sets/r1/labels.npy", np.arange(7, dtype=np.int64))
    store.write_bytes("models/m/model.safetensors", b"weights")
    assert store.read_array("reference_sets/r1/labels.npy").tolist() == list(range(7))
    assert store.exists("models/m/model.safetensors") and not store.exists("models/x/model.safetensors")
    head = s3_client(endpoint).head_object(Bucket=bucket, Key="runs/a/models/m/model.safetensors")
    assert head["Metadata"] == {"sha256": hashlib.sha256(b"weights").hexdigest()}
    assert sorted(_keys(endpoint, bucket)) == [
        "runs/a/models/m/model.safetensors",
        "runs/a/reference_sets/r1/labels.npy",
    ]
    with pytest.raises(ArtifactMissing, match=rf"s3://{bucket}/runs/a/models/x/model.safetensors not found"):
        store.read_bytes("models/x/model.safetensors")
    with pytest.raises(ValueError, match="relative path inside the store"):
        store.write_bytes("../escape", b"x")


def test_credentials_default_to_the_aws_variables(endpoint, bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-aws-env")
    configure(monkeypatch, home=tmp_path / "home", artifact_url=f"s3://{bucket}", s3_endpoint_url=endpoint)
    store = get_store()
    assert store.client._request_signer._credentials.access_key == "from-aws-env"
    assert store.prefix == "" and store.object_key("a/b") == "a/b"


def test_a_missing_bucket_is_a_clear_error(endpoint, bucket):
    store = S3Store(s3_client(endpoint), "no-such-bucket")
    with pytest.raises(ArtifactError, match=r"storing s3://no-such-bucket/k failed.*NoSuchBucket"):
        store.write_bytes("k", b"x")


def test_bytes_changed_in_the_store_fail_their_checksum(endpoint, bucket):
    store = _store(endpoint, bucket)
    store.write_bytes("models/m/model.safetensors", b"original weights")
    raw = s3_client(endpoint)
    good = hashlib.sha256(b"original weights").hexdigest()
    raw.put_object(
        Bucket=bucket, Key="pre/fix/models/m/model.safetensors", Body=b"tampered", Metadata={"sha256": good}
    )
    with pytest.raises(
        ArtifactCorrupt, match=f"sha256 of the bytes read is {hashlib.sha256(b'tampered').hexdigest()}"
    ):
        store.read_bytes("models/m/model.safetensors")
    raw.put_object(Bucket=bucket, Key="pre/fix/models/m/model.safetensors", Body=b"no checksum")
    with pytest.raises(ArtifactCorrupt, match="has no sha256 metadata"):
        store.read_bytes("models/m/model.safetensors")


def test_a_put_cut_off_midway_leaves_nothing_and_a_retry_works(endpoint, bucket, proxy):
    store = _store(proxy.url, bucket)
    store.write_bytes("k/old", b"version 1")
    data = np.random.default_rng(0).bytes(1024 * 1024)
    proxy.cut_after = 300 * 1024  # every connection dies once 300 KiB went up it
    with pytest.raises(ArtifactError, match=r"storing s3://.*/pre/fix/k/new failed; nothing new is visible"):
        store.write_bytes("k/new", data)
    with pytest.raises(ArtifactError):
        store.write_bytes("k/old", data)  # a failed overwrite keeps the old bytes
    assert proxy.cuts >= 2  # botocore retried, and each try was cut
    assert sorted(_keys(endpoint, bucket)) == ["pre/fix/k/old"]
    proxy.cut_after = None
    assert not store.exists("k/new") and store.read_bytes("k/old") == b"version 1"
    store.write_bytes("k/new", data)
    assert store.read_bytes("k/new") == data


def test_a_multipart_upload_cut_off_midway_is_aborted_and_a_retry_works(endpoint, bucket, proxy):
    mib = 1024 * 1024
    store = _store(proxy.url, bucket, multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    data = np.random.default_rng(1).bytes(12 * mib)  # three parts
    proxy.cut_after = 3 * mib  # each part dies midway; the abort request still gets through
    with pytest.raises(ArtifactError, match="nothing new is visible"):
        store.write_bytes("models/big/model.safetensors", data)
    raw = s3_client(endpoint)
    assert _keys(endpoint, bucket) == []
    assert raw.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, not left behind
    proxy.cut_after = None
    store.write_bytes("models/big/model.safetensors", data)
    assert store.read_bytes("models/big/model.safetensors") == data
    assert _keys(endpoint, bucket) == ["pre/fix/models/big/model.safetensors"]


def test_a_real_training_and_unlearning_job_keep_their_checkpoints_in_the_bucket(
    endpoint, bucket, pg_env, monkeypatch
):
    from core import services
    from core.bootstrap import ensure_digits
    from core.db import session_scope
    from core.tables import Job, Model
    from worker.runner import run_job

    home = pg_env["LETHE_HOME"]
    configure(
        monkeypatch,
        home=home,
        database_url=pg_env["LETHE_DATABASE_URL"],
        broker_url=pg_env["LETHE_BROKER_URL"],
        queue=pg_env["LETHE_QUEUE"],
        artifact_url=f"s3://{bucket}/lethe",
        s3_endpoint_url=endpoint,
    )
    with session_scope() as session:
        ensure_digits(session)
        job, model = services.create_training(
            session,
            tenant_id="local",
            name="tiny",
            dataset_ref="digits",
            arch={"width": 4},
            recipe={"epochs": 1, "batch_size": 128, "lr": 0.05},
        )
    assert run_job(job.id) == "succeeded"
    with session_scope() as session:
        job, _request = services.create_unlearn(
            session,
            tenant_id="local",
            model_ref="tiny",
            forget_ids=[4, 8, 15],
            method="finetune",
            params={"epochs": 1},
        )
    assert run_job(job.id) == "succeeded"
    with session_scope() as session:
        child = session.get(Model, session.get(Job, job.id).result["model_id"])
        parent = session.get(Model, model.id)
        keys = [f"lethe/{parent.checkpoint}", f"lethe/{child.checkpoint}"]
        assert child.parent_id == parent.id and keys[0] == f"lethe/models/{parent.id}/model.safetensors"
    raw = s3_client(endpoint)
    assert set(keys) <= set(_keys(endpoint, bucket))
    for key in keys:
        obj = raw.get_object(Bucket=bucket, Key=key)
        assert obj["Metadata"]["sha256"] == hashlib.sha256(obj["Body"].read()).hexdigest()
    local = Path(home) / "artifacts" / "models"  # shared by the run's tests: look for these two models only
    assert not (local / parent.id).exists() and not (local / child.id).exists()  # nothing went there
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.utils import new_key

    stored = raw.get_object(Bucket=bucket, Key=keys[1])["Body"].read()
    with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as api:
        got = api.get(f"/models/{child.id}/weights")  # served from the bucket, not a local path
        assert got.status_code == 200 and got.content == stored
        assert got.headers["etag"] == f'"{hashlib.sha256(stored).hexdigest()}"'
        assert (
            api.get(f"/models/{child.id}/weights", headers={"If-None-Match": got.headers["etag"]}).status_code
            == 304
        )


def test_create_writes_only_once_and_delete_removes(endpoint, bucket):
    store = _store(endpoint, bucket)
    assert store.create("keys/k.pem", b"first") is True
    assert store.create("keys/k.pem", b"second") is False  # a conditional write: the first one wins
    assert store.read_bytes("keys/k.pem") == b"first"  # and it carries its checksum like any write
    assert store.delete("keys/k.pem") is True and not store.exists("keys/k.pem")
    assert store.delete("keys/k.pem") is False


def test_the_certificate_signing_key_lives_in_the_bucket_and_is_made_once(
    endpoint, bucket, tmp_path, monkeypatch
):
    """Every API host of a deployment signs with the same key when the artifacts are in a bucket."""
    from core import certificates

    configure(
        monkeypatch, home=tmp_path / "home", artifact_url=f"s3://{bucket}/lethe", s3_endpoint_url=endpoint
    )
    first = certificates.public_key_info()
    assert certificates.public_key_info() == first
    key = f"lethe/{certificates.KEY_ARTIFACT}"
    assert _keys(endpoint, bucket) == [key]
    assert b"PRIVATE KEY" in s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    signed = certificates.sign({"certificate": "test"})
    assert certificates.verify(signed) == first["key_id"]
