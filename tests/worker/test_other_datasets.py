"""Data sets other than digits through the whole service: register with the CLI, train, unlearn, score.

AgeDB is written here in its loader's layout (AgeDB.csv + JPEG faces, small synthetic ones) and run as the
study's regression task; Fashion-MNIST is a subset of the real files, when the machine has them.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.utils import drain

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FORGET = list(range(0, 40, 4))  # 10 training samples


def _write_agedb(root: Path, n_train: int = 48, n_test: int = 16) -> None:
    """Grey faces whose brightness follows the age, so there is something to learn; folder 0 is the test split."""
    rng = np.random.default_rng(0)
    (root / "AgeDB").mkdir(parents=True)
    with (root / "AgeDB.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["folder", "age", "img_path"])
        for i in range(n_train + n_test):
            age = int(rng.integers(5, 95))
            name = f"{i}_Person{i}_{age}_{'mf'[i % 2]}.jpg"
            Image.new("RGB", (24, 24), (2 * age,) * 3).save(root / "AgeDB" / name, quality=95)
            writer.writerow([0 if i >= n_train else 1 + i % 5, age, f"AgeDB/{name}"])


def _idx(array: np.ndarray) -> bytes:
    import struct

    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fashion_subset(folder: Path, n_train: int = 600, n_test: int = 200) -> None:
    """The first samples of the real Fashion-MNIST files, in the same IDX layout."""
    from ml.data.fashion_mnist import read_idx

    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = read_idx(FASHION_ROOT, f"{prefix}-images-idx3-ubyte", 3)[:n]
        labels = read_idx(FASHION_ROOT, f"{prefix}-labels-idx1-ubyte", 1)[:n]
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))


def _stored(model_id: str, arch: dict, dataset_kind: str, root: Path, **options: object):
    """The model's checkpoint from the artifact store and its data set, loaded here to recompute scores."""
    from core.artifacts import get_store
    from ml import checkpoint
    from ml.data import load_dataset

    data = load_dataset(dataset_kind, root, **options)
    blob = get_store().read_bytes(f"models/{model_id}/model.safetensors")
    n_out = 1 if data.task == "regression" else data.num_classes
    return checkpoint.from_bytes(blob, arch, n_out, data.in_channels), data


def _train_then_unlearn(client, name: str) -> tuple[dict, dict, dict]:
    arch = {"width": 4}
    r = client.post(
        "/models",
        json={"dataset": name, "name": f"{name}-m", "arch": arch, "recipe": {"epochs": 2, "batch_size": 16}},
    )
    assert r.status_code == 202, r.text
    assert drain() == 1
    model = client.get(f"/models/{name}-m").json()
    assert model["status"] == "ready", client.get(f"/jobs/{r.json()['job_id']}").json()
    r = client.post(
        "/unlearn",
        json={"model_id": model["id"], "forget_ids": FORGET, "method": "finetune", "params": {"epochs": 1}},
    )
    assert r.status_code == 202, r.text
    assert drain() == 1
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    child = client.get(f"/models/{job['result']['model_id']}").json()
    assert child["parent_id"] == model["id"] and child["n_forgotten"] == len(FORGET)
    return model, child, client.get(f"/jobs/{job['id']}/metrics").json()


def test_agedb_regression_through_the_service(client, tmp_path):
    from ml.logits import mae

    root = tmp_path / "agedb"
    _write_agedb(root)
    added = CliRunner().invoke(
        app,
        [
            "datasets",
            "add",
            "faces",
            "--kind",
            "agedb",
            "--root",
            str(root),
            "--option",
            "task=regression",
            "--option",
            "image_size=16",
        ],
    )
    assert added.exit_code == 0, added.output
    listed = {d["name"]: d for d in client.get("/datasets").json()["data"]}
    assert listed["faces"]["task"] == "regression" and listed["faces"]["n_train"] == 48
    parent, child, metrics = _train_then_unlearn(client, "faces")
    assert metrics["forget_accuracy"] is None and metrics["n_forget"] == len(FORGET)
    # A regression model's training reports its errors too, not only accuracies that are undefined for it.
    trained, data = _stored(parent["id"], {"width": 4}, "agedb", root, task="regression", image_size=16)
    assert parent["metrics"]["test_mae"] == pytest.approx(mae(trained, data, None, split="test"), rel=1e-6)
    assert parent["metrics"]["train_mae"] == pytest.approx(mae(trained, data, None), rel=1e-6)
    net, data = _stored(child["id"], {"width": 4}, "agedb", root, task="regression", image_size=16)
    # The stored errors are the child checkpoint's own, in years, on the forget set and on the test split.
    assert metrics["forget_mae"] == pytest.approx(mae(net, data, np.array(FORGET)), rel=1e-6)
    assert metrics["test_mae"] == pytest.approx(mae(net, data, None, split="test"), rel=1e-6)


@pytest.mark.skipif(
    not FASHION_ROOT.is_dir(), reason=f"{FASHION_ROOT} is absent (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_subset_through_the_service(client, tmp_path):
    from ml.logits import accuracy

    root = tmp_path / "fashion"
    _fashion_subset(root)
    added = CliRunner().invoke(
        app, ["datasets", "add", "fashion", "--kind", "fashion_mnist", "--root", str(root)]
    )
    assert added.exit_code == 0, added.output
    _, child, metrics = _train_then_unlearn(client, "fashion")
    net, data = _stored(child["id"], {"width": 4}, "fashion_mnist", root)
    assert data.n_train == 600 and data.image_size == (28, 28)
    assert metrics["forget_accuracy"] == pytest.approx(accuracy(net, data, np.array(FORGET)), abs=1e-9)
    assert metrics["test_accuracy"] == pytest.approx(accuracy(net, data, None, split="test"), abs=1e-9)
    assert metrics["test_accuracy"] > 0.3  # ten classes: chance is 0.1
