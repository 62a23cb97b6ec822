"""GET /models/{id}/weights: the forgotten model's way out, loadable outside Lethe."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load as st_load
from torch import nn

from core.bootstrap import ensure_digits
from core.db import session_scope
from ml.data import load_dataset
from tests.utils import add_ready_model, drain

FORGET = list(range(20))


def _study_checkpoint() -> bytes:
    """A checkpoint as the study's Lightning code saves one: `state_dict` with `model.`-prefixed keys."""
    from ml.models import build_model

    torch.manual_seed(3)
    state = build_model({"width": 64}, 10, 1).state_dict()
    buf = io.BytesIO()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 99}, buf)
    return buf.getvalue()


def _plain_resnet18(state: dict[str, torch.Tensor]) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), loaded strictly: no Lethe code."""
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    renamed = {k.replace(".shortcut.", ".downsample.").replace("linear.", "fc."): v for k, v in state.items()}
    net.load_state_dict(renamed, strict=True)
    return net.eval()


def _plain_logits(net: nn.Module, x_u8: np.ndarray, mean, std) -> np.ndarray:
    x = torch.from_numpy(x_u8).float() / 255.0
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.inference_mode():
        return net(x).numpy()


@pytest.fixture
def unlearned(client):
    """An uploaded study-format checkpoint, and the model Lethe made by forgetting FORGET from it."""
    with session_scope() as session:
        ensure_digits(session)
    files = {"file": ("study.ckpt", _study_checkpoint(), "application/octet-stream")}
    r = client.post(
        "/models", data={"dataset": "digits", "arch": '{"width": 64}', "name": "base"}, files=files
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/unlearn", json={"model_id": "base", "forget_ids": FORGET, "method": "poison", "name": "forgot"}
    )
    assert r.status_code == 202, r.text
    assert drain() == 1
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    return job, client.get(f"/jobs/{job['id']}/metrics").json()


def test_unlearned_weights_load_into_a_plain_resnet18_and_give_lethes_numbers(client, unlearned):
    job, metrics = unlearned
    child = job["result"]["model_id"]
    r = client.get(f"/models/{child}/weights")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'attachment; filename="forgot.safetensors"'
    assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'

    net = _plain_resnet18(st_load(r.content))
    data = load_dataset("digits")
    test_logits = _plain_logits(net, data.test_x, data.mean, data.std)
    train_logits = _plain_logits(net, data.train_x, data.mean, data.std)

    # The logits Lethe computes from its own copy of the checkpoint.
    from core.artifacts import get_store
    from core.tables import Model
    from ml import checkpoint
    from ml.logits import logits

    with session_scope() as session:
        key = session.get(Model, child).checkpoint
    lethe_net = checkpoint.from_bytes(get_store().read_bytes(key), {"width": 64}, 10, 1)
    np.testing.assert_allclose(test_logits, logits(lethe_net, data, None, split="test"), atol=1e-4)

    # The accuracies Lethe reports for the job, recomputed from the plain network's logits.
    retain = np.setdiff1d(np.arange(data.n_train), FORGET)
    assert float(np.mean(test_logits.argmax(1) == data.test_y)) == metrics["test_accuracy"]
    assert (
        float(np.mean(train_logits[FORGET].argmax(1) == data.train_y[FORGET])) == metrics["forget_accuracy"]
    )
    assert (
        float(np.mean(train_logits[retain].argmax(1) == data.train_y[retain])) == metrics["retain_accuracy"]
    )

    # The parent is untouched and downloads as a different file.
    parent = client.get("/models/base/weights")
    assert parent.status_code == 200 and parent.headers["etag"] != r.headers["etag"]
    assert parent.headers["content-disposition"] == 'attachment; filename="base.safetensors"'


def test_if_none_match_answers_304_and_ranges_resume(client, unlearned):
    first = client.get("/models/base/weights")
    etag = first.headers["etag"]
    again = client.get("/models/base/weights", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert (
        client.get("/models/base/weights", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    )
    assert client.get("/models/base/weights", headers={"If-None-Match": '"other"'}).status_code == 200
    part = client.get("/models/base/weights", headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == first.content[100:]


def test_no_weights_is_a_clear_4xx(client):
    with session_scope() as session:
        add_ready_model(session, "nockpt").status = "training"
    r = client.get("/models/nockpt/weights")
    assert r.status_code == 409 and "status is training" in r.json()["detail"]
    assert client.get("/models/nope/weights").status_code == 404
    assert client.get("/models/nockpt/weights", headers={"X-API-Key": "wrong"}).status_code == 401


def test_dashboard_model_page_links_the_download(client, unlearned):
    from tests.utils import new_key

    key = new_key("local")
    client.cookies.set("lethe_key", key)
    page = client.get("/ui/models/base", headers={"X-API-Key": ""})
    base_id = client.get("/models/base").json()["id"]
    assert f'href="/ui/models/{base_id}/weights"' in page.text
    download = client.get(f"/ui/models/{base_id}/weights", headers={"X-API-Key": ""})
    assert download.status_code == 200
    assert download.content == client.get("/models/base/weights").content
    client.cookies.clear()
    assert client.get(f"/ui/models/{base_id}/weights", headers={"X-API-Key": ""}).status_code == 401
