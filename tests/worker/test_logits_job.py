"""Logits as a job: POST /models/{id}/logits, the worker's logits.npz, and its download."""

from __future__ import annotations

import io

import numpy as np
import pytest

from core.artifacts import get_store
from core.db import session_scope
from core.tables import Dataset, Job, Model
from ml import checkpoint
from ml.logits import logits
from tests.utils import add_ready_model, drain, new_key, train_model
from worker.data import load_for


@pytest.fixture
def tiny(client) -> str:
    return train_model("tiny", {"width": 4}, {"epochs": 1, "lr": 0.05, "batch_size": 64})


def _reference(model_id: str, ids: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The logits and labels computed directly from the stored checkpoint, outside the job."""
    with session_scope() as session:
        model = session.get(Model, model_id)
        ds = session.get(Dataset, model.dataset_id)
        net = checkpoint.from_bytes(
            get_store().read_bytes(model.checkpoint), model.arch, ds.num_classes, ds.in_channels
        )
        data = load_for(ds)
    labels = (data.train_y if split == "train" else data.test_y)[ids]
    return logits(net, data, ids, split=split), labels


def _run(client, model: str, body: dict) -> tuple[str, dict[str, np.ndarray]]:
    r = client.post(f"/models/{model}/logits", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert client.get(f"/jobs/{job_id}/artifacts/logits.npz").status_code == 409  # not run yet
    assert drain() == 1
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["kind"] == "logits" and job["progress"] == 1.0
    got = client.get(f"/jobs/{job_id}/artifacts/logits.npz")
    assert got.status_code == 200 and got.headers["content-type"] == "application/octet-stream"
    assert got.headers["etag"] == f'"{job["result"]["sha256"]}"'
    assert "logits.npz" in got.headers["content-disposition"]
    with np.load(io.BytesIO(got.content), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert job["result"]["n_samples"] == len(arrays["ids"]) and job["result"]["n_outputs"] == 10
    return job_id, arrays


def test_the_test_split_logits_are_the_models_own(client, tiny):
    _, arrays = _run(client, "tiny", {"split": "test"})
    expected, labels = _reference(tiny, np.arange(len(arrays["ids"])), "test")
    assert arrays["logits"].dtype == np.float32 and arrays["logits"].shape == (359, 10)
    np.testing.assert_array_equal(arrays["ids"], np.arange(359))
    np.testing.assert_allclose(arrays["logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(arrays["labels"], labels)
    assert (arrays["logits"].argmax(1) == labels).mean() > 0.2  # a trained model, not noise


def test_chosen_ids_come_back_ascending_with_their_labels(client, tiny):
    _, arrays = _run(client, "tiny", {"ids": [50, 3, 17]})
    np.testing.assert_array_equal(arrays["ids"], [3, 17, 50])
    expected, labels = _reference(tiny, np.array([3, 17, 50]), "train")
    np.testing.assert_allclose(arrays["logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(arrays["labels"], labels)


def test_a_forget_requests_ids_can_be_scored_on_any_model_of_its_data_set(client, tiny):
    r = client.post("/unlearn", json={"model_id": "tiny", "forget_ids": [7, 2, 11], "method": "none"})
    assert r.status_code == 202
    drain()
    child = client.get(f"/jobs/{r.json()['job_id']}").json()["result"]["model_id"]
    _, arrays = _run(client, child, {"forget_request_id": r.json()["forget_request_id"]})
    np.testing.assert_array_equal(arrays["ids"], [2, 7, 11])
    expected, _ = _reference(child, np.array([2, 7, 11]), "train")
    np.testing.assert_allclose(arrays["logits"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "ids"),
        ({"ids": [1], "forget_request_id": "x"}, "forget_request_id"),
        ({"split": "test", "ids": [358, 359]}, "ids"),
        ({"ids": [1, 1]}, "ids"),
        ({"ids": []}, "ids"),
        ({"split": "validation"}, "split"),
    ],
)
def test_bad_requests_are_422_naming_the_field_and_queue_nothing(client, body, field):
    with session_scope() as session:
        add_ready_model(session, "m1")
    r = client.post("/models/m1/logits", json=body)
    assert r.status_code == 422, r.text
    assert any(field in e["loc"] for e in r.json()["detail"]), r.json()
    with session_scope() as session:
        assert session.query(Job).count() == 0


def test_unknown_models_requests_and_artifacts_are_404_and_other_tenants_see_nothing(client, tiny):
    assert client.post("/models/nope/logits", json={"split": "test"}).status_code == 404
    assert client.post("/models/tiny/logits", json={"forget_request_id": "nope"}).status_code == 404
    job_id, _ = _run(client, "tiny", {"ids": [1]})
    assert client.get(f"/jobs/{job_id}/artifacts/weights.bin").status_code == 404
    other = {"X-API-Key": new_key("acme")}
    assert client.get(f"/jobs/{job_id}/artifacts/logits.npz", headers=other).status_code == 404
    assert client.post("/models/tiny/logits", json={"split": "test"}, headers=other).status_code == 404


def test_a_model_that_is_not_ready_is_409(client):
    with session_scope() as session:
        model = add_ready_model(session, "m1")
        model.status = "training"
    r = client.post("/models/m1/logits", json={"split": "test"})
    assert r.status_code == 409 and "not ready" in r.json()["detail"]


def test_a_purged_model_is_409_saying_so(client, tiny):
    assert client.post("/models/tiny/purge").status_code == 200
    r = client.post("/models/tiny/logits", json={"split": "test"})
    assert r.status_code == 409 and "purged" in r.json()["detail"]
