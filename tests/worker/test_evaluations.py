"""Forget quality as a service, on Postgres: reference sets, evaluations, studies, figures and export.

Jobs are created over HTTP and run by a real worker process that consumes their broker messages.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile

import numpy as np
import pytest
from sqlalchemy import func, select, update

from core.db import session_scope
from core.tables import Job, Model
from ml.metrics.epsilon import epsilon_hat
from ml.metrics.seed_layout import load_approach
from tests.utils import drain, train_model

FORGET = list(range(0, 600, 20))  # 30 digits training samples


def count_jobs(kind: str) -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(Job).where(Job.kind == kind)).scalar_one()


@pytest.fixture
def tiny(client) -> str:
    """A ready width-4 digits model trained for 3 epochs."""
    return train_model("tiny", {"width": 4}, {"epochs": 3, "lr": 0.05, "batch_size": 64})


def _retain_accuracy(model_id: str) -> float:
    """Accuracy of the stored width-4 checkpoint on the digits training samples outside FORGET."""
    import numpy as np

    from core.artifacts import get_store
    from ml import checkpoint
    from ml.data import load_dataset
    from ml.logits import accuracy

    digits = load_dataset("digits")
    blob = get_store().read_bytes(f"models/{model_id}/model.safetensors")
    net = checkpoint.from_bytes(blob, {"width": 4}, digits.num_classes, digits.in_channels)
    return accuracy(net, digits, np.setdiff1d(np.arange(digits.n_train), FORGET))


def _evaluate(client, method: str, n: int = 6, **extra) -> dict:
    body = {"model_id": "tiny", "forget_ids": FORGET, "method": method, "n_models": n, **extra}
    r = client.post("/evaluations", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def test_none_is_clearly_worse_than_retrain_and_the_reference_set_is_reused(client, tiny):
    first = _evaluate(client, "none")
    # The six reference models train as one pack (LETHE_PACK_SIZE unset: up to 8 per task).
    assert count_jobs("reference_run") == 1 and count_jobs("unlearn_run") == 6
    assert client.get(f"/jobs/{first['job_id']}").json()["status"] == "running"
    assert drain() == 7
    none = client.get(f"/evaluations/{first['evaluation_id']}").json()
    assert none["status"] == "succeeded"

    second = _evaluate(client, "retrain")
    assert count_jobs("reference_run") == 1  # reused: no new reference training
    assert drain() == 1  # retrain trains through the trainer: its six runs are one pack
    retrain = client.get(f"/evaluations/{second['evaluation_id']}").json()
    assert retrain["reference_set_id"] == none["reference_set_id"]
    assert retrain["results"]["reference_run_ids"] == none["results"]["reference_run_ids"]

    eps_none, eps_retrain = none["results"]["epsilon_hat"], retrain["results"]["epsilon_hat"]
    # The unchanged model is the same point for every seed: its forget samples are told apart perfectly.
    assert eps_none == "inf"
    assert isinstance(eps_retrain, float) and math.isfinite(eps_retrain)
    for res in (none["results"], retrain["results"]):
        assert res["n_samples"] == len(FORGET) and res["n_reference"] == 6 and res["n_unlearned"] == 6
        assert len(res["per_sample_epsilon"]) == len(FORGET)
        assert res["retain_accuracy"]["n"] == 6 and res["neurips"]["n_reference"] == 6
        assert (
            res["wall_seconds"]["n"] == 6 and res["cost_vs_retrain"] > 0
        )  # wall clock: no bound holds on any load
    # "none" is six copies of tiny: its retain accuracy is tiny's own, recomputed here, with no spread.
    assert none["results"]["retain_accuracy"]["mean"] == pytest.approx(_retain_accuracy(tiny), abs=1e-9)
    assert none["results"]["retain_accuracy"]["ci95"] == pytest.approx(0.0, abs=1e-9)
    assert none["results"]["mia_efficacy"]["ci95"] == pytest.approx(0.0, abs=1e-9)
    # Six retrained models: a mean of 0.959 +- 0.010 (95%) measured; one model's spread is about 0.013.
    assert retrain["results"]["retain_accuracy"]["mean"] > 0.9
    assert 0 < retrain["results"]["retain_accuracy"]["ci95"] < 0.05
    # The cost that holds on any CPU: sample passes over a retrain's.
    assert retrain["results"]["budget_vs_retrain"] == 1.0 and none["results"]["budget_vs_retrain"] == 0.0
    # The unchanged model still knows its forget set better than models that never saw it.
    assert none["results"]["kl_to_reference"] > retrain["results"]["kl_to_reference"] >= 0
    # An attack's efficacy is a share of the 30 forget samples: six identical models give one such share.
    assert none["results"]["mia_efficacy"]["n"] == retrain["results"]["mia_efficacy"]["n"] == 6
    share = none["results"]["mia_efficacy"]["mean"] * len(FORGET)
    assert share == pytest.approx(round(share), abs=1e-9)

    metrics = client.get(f"/jobs/{first['job_id']}/metrics").json()
    assert metrics["epsilon_hat"] == "inf" and metrics["n_reference"] == 6

    table = client.get("/evaluations", params={"reference_set_id": none["reference_set_id"]}).json()
    assert [row["method"] for row in table["data"]] == ["none", "retrain"] and table["count"] == 2
    assert table["data"][1]["epsilon_hat"] == eps_retrain and table["data"][1]["measure"] == "accuracy"
    r = client.get(
        "/evaluations", params={"reference_set_id": none["reference_set_id"]}, headers={"Accept": "text/csv"}
    )
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["method"] for row in rows] == ["none", "retrain"] and float(
        rows[1]["epsilon_hat"]
    ) == eps_retrain

    for name in ("epsilon-delta", "histograms"):
        png = client.get(f"/evaluations/{first['evaluation_id']}/plots/{name}.png")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client.get(f"/evaluations/{first['evaluation_id']}/plots/pie.png").status_code == 404


def test_reference_sets_are_keyed_and_grow_only_by_what_is_missing(client, tiny):
    body = {"model_id": "tiny", "forget_ids": FORGET, "n_models": 2}
    r = client.post("/references", json=body)
    assert r.status_code == 202 and r.json()["job_id"]
    rs_id = r.json()["reference_set_id"]
    assert drain() == 1  # both models in one pack
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0

    again = client.post("/references", json={**body, "forget_ids": list(reversed(FORGET))})
    assert again.status_code == 200 and again.json() == {"job_id": None, "reference_set_id": rs_id}
    assert count_jobs("reference_run") == 1

    more = client.post("/references", json={**body, "n_models": 3})
    assert more.status_code == 202 and more.json()["reference_set_id"] == rs_id
    assert count_jobs("reference_run") == 2
    drain()
    assert client.get(f"/references/{rs_id}").json()["runs"] == {"succeeded": 3}

    other = client.post("/references", json={**body, "recipe": {"epochs": 1}})
    assert other.status_code == 202 and other.json()["reference_set_id"] != rs_id


def test_a_failed_run_fails_its_evaluation_with_the_reason(client, tiny):
    created = _evaluate(client, "finetune", n=2)
    with session_scope() as session:
        session.execute(update(Model).where(Model.id == tiny).values(checkpoint="models/missing.safetensors"))
    drain()
    job = client.get(f"/jobs/{created['job_id']}").json()
    assert job["status"] == "failed" and "did not succeed" in job["error"] and "missing" in job["error"]
    assert client.get(f"/evaluations/{created['evaluation_id']}").json()["results"] is None


def test_evaluation_input_is_checked_before_anything_is_queued(client, tiny):
    before = count_jobs("unlearn_run")
    bad = [
        ({"method": "nope"}, "method"),
        ({"n_models": 0}, "n_models"),
        ({"forget_ids": [5000]}, "forget_ids"),
        ({"params": {"epochs": -1}}, "params"),
        ({"delta": 1.5}, "delta"),
    ]
    for change, field in bad:
        body = {"model_id": "tiny", "forget_ids": FORGET, "method": "finetune", "n_models": 2, **change}
        r = client.post("/evaluations", json=body)
        assert r.status_code == 422, (change, r.text)
        assert field in r.json()["detail"][0]["loc"], r.json()
    assert count_jobs("unlearn_run") == before
    assert (
        client.post("/evaluations", json={"model_id": "x", "forget_ids": [1], "method": "none"}).status_code
        == 404
    )


def test_a_study_exports_the_study_layout(client, tiny, tmp_path):
    r = client.post(
        "/studies",
        json={
            "model_id": "tiny",
            "forget_fraction": 0.02,
            "methods": ["none", "finetune"],
            "n_models": 3,
            "seed": 4,
        },
    )
    assert r.status_code == 202, r.text
    study_id = r.json()["study_id"]
    assert client.get(f"/studies/{study_id}/export").status_code == 409
    drain()
    study = client.get(f"/studies/{study_id}").json()
    assert study["status"] == "succeeded" and len(study["evaluation_ids"]) == 2
    assert client.get(f"/jobs/{study['job_id']}/metrics").json()["methods"]["none"]["epsilon_hat"] == "inf"

    export = client.get(f"/studies/{study_id}/export")
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(export.content)).extractall(tmp_path)
    ids = [int(x) for x in (tmp_path / "forget_set.txt").read_text().split(",")]
    assert len(ids) == round(0.02 * 1438) and ids == sorted(ids)
    retain = np.load(tmp_path / "logits_retain.npy")
    assert retain.shape == (len(ids), 4, 10) and np.all(retain[:, 0].sum(axis=1) == 1)
    approach = load_approach(tmp_path, "finetune")
    stored = client.get(f"/evaluations/{study['evaluation_ids'][1]}").json()["results"]
    recomputed = epsilon_hat(approach.reference_logits, approach.unlearned_logits, approach.labels)
    assert recomputed.to_json()["epsilon_hat"] == stored["epsilon_hat"]
    with open(tmp_path / "finetune" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(row["seed"]) for row in rows] == [10_000, 10_001, 10_002]
