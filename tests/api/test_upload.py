"""POST /models with a checkpoint file: tensors only, checked against the architecture, never unpickled code."""

from __future__ import annotations

import io
import os

import pytest
import torch
from safetensors.torch import save as st_save

from core.bootstrap import ensure_digits
from core.db import session_scope
from ml.models import build_model


class _Payload:
    """Unpickling this runs code: the kind of file an upload must never execute."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def digits(client):
    with session_scope() as session:
        ensure_digits(session)


def _state(width: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model({"width": width}, 10, 1).state_dict()


def _upload(client, data: bytes, filename: str, width: int = 8, name: str | None = "up"):
    form = {"dataset": "digits", "arch": f'{{"width": {width}}}'}
    if name:
        form["name"] = name
    return client.post("/models", data=form, files={"file": (filename, data, "application/octet-stream")})


def test_safetensors_upload_gives_a_ready_model(client, digits):
    state = {k: v.contiguous() for k, v in _state(8).items()}
    r = _upload(client, st_save(state), "model.safetensors")
    assert r.status_code == 201, r.text
    model = client.get("/models/up").json()
    assert model["status"] == "ready" and model["made_by"] == "upload" and model["arch"]["width"] == 8
    unlearn = client.post("/unlearn", json={"model_id": "up", "forget_ids": [1], "method": "none"})
    assert unlearn.status_code == 202


def test_pytorch_state_dict_with_the_study_prefix_is_accepted(client, digits):
    buf = io.BytesIO()
    torch.save({"state_dict": {f"model.{k}": v for k, v in _state(8).items()}}, buf)
    r = _upload(client, buf.getvalue(), "study.pt", name="study")
    assert r.status_code == 201, r.text


def test_pickled_code_is_refused_and_never_runs(client, digits, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"linear.weight": _Payload(str(marker))}, buf)
    r = _upload(client, buf.getvalue(), "evil.pt", name="evil")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "file"]
    assert not marker.exists()
    assert client.get("/models/evil").status_code == 404


@pytest.mark.parametrize(
    ("data", "filename", "width", "needle"),
    [
        (b"not a checkpoint at all", "x.pt", 8, "cannot read"),
        (b"\x00" * 64, "x.safetensors", 8, "cannot read"),
        (None, "wide.safetensors", 16, "shape"),
    ],
)
def test_malformed_or_mismatched_files_are_422(client, digits, data, filename, width, needle):
    if data is None:
        data = st_save({k: v.contiguous() for k, v in _state(width).items()})
        width = 8
    r = _upload(client, data, filename, width=width, name=None)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"][0]["msg"]


def test_upload_form_is_checked(client, digits):
    r = client.post("/models", data={"dataset": "digits"}, files={"other": ("a", b"x")})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "file"]
    r = client.post("/models", data={"dataset": "nope"}, files={"file": ("a.pt", b"x")})
    assert r.status_code == 404
    r = client.post("/models", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_checkpoint_uploads_have_their_own_body_limit(client, digits, monkeypatch):
    """A multipart POST /models may exceed the body limit up to the upload limit; nothing else may."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import get_settings

    monkeypatch.setenv("LETHE_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("LETHE_MAX_UPLOAD_BYTES", "65536")
    get_settings.cache_clear()
    state = {k: v.contiguous() for k, v in _state(1).items()}
    blob = st_save(state)
    assert 2048 < len(blob) < 65536 - 1024, len(blob)
    with TestClient(create_app(), headers=dict(client.headers)) as small:
        r = _upload(small, blob, "model.safetensors", width=1)
        assert r.status_code == 201, r.text  # above the body limit, within the upload limit
        big = _upload(small, blob + b"\0" * 65536, "model.safetensors", width=1, name="big")
        assert big.status_code == 413 and "65536" in big.json()["detail"]
        as_json = small.post("/models", json={"dataset": "digits", "name": "x" * 4096})
        assert as_json.status_code == 413 and "2048" in as_json.json()["detail"]

        def streamed():
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n\r\n'
            for _ in range(100):
                yield b"\0" * 1024
            yield b"\r\n--b--\r\n"

        chunked = small.post(
            "/models", content=streamed(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert chunked.status_code == 413 and "65536" in chunked.json()["detail"]
    assert client.get("/models/big").status_code == 404
