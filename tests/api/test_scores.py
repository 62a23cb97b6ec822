"""POST /scores: epsilon-hat of logits made elsewhere, exactly as `lethe epsilon --json` computes it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ml.metrics.epsilon import epsilon_hat, epsilon_hat_regression, hinge_statistic, regression_statistic
from ml.metrics.resolution import resolution
from tests.utils import new_key, reset_caches


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _logits(seed: int, models: int = 6, samples: int = 20, classes: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    reference = rng.normal(size=(models, samples, classes)).astype(np.float32)
    unlearned = rng.normal(0.5, 1.0, size=(models, samples, classes)).astype(np.float32)
    return {"reference": reference, "unlearned": unlearned, "labels": labels}


def _post(client, data: bytes, name: str = "logits.npz", **form: str):
    return client.post("/scores", files={"file": (name, data, "application/octet-stream")}, data=form)


def test_an_npz_scores_like_the_library_and_is_kept_for_its_tenant(client):
    arrays = _logits(0)
    data = _npz(**arrays)
    r = _post(client, data, delta="0.1")
    assert r.status_code == 201, r.text
    body = r.json()
    exact = epsilon_hat(arrays["reference"], arrays["unlearned"], arrays["labels"], delta=0.1)
    stats = (hinge_statistic(arrays[k], arrays["labels"]) for k in ("reference", "unlearned"))
    expected = exact.to_json() | resolution(exact, *stats).to_json()
    assert body["results"] == {"logits": expected}
    assert body["results"]["logits"]["epsilon_ceiling"] == pytest.approx(
        1.482, abs=1e-3
    )  # ln((1 - 0.1 - 1/6) * 6)
    low, high = body["results"]["logits"]["epsilon_hat_ci95_models"]
    assert low <= high
    assert body["input_format"] == "npz" and body["delta"] == 0.1 and body["input_bytes"] == len(data)
    import hashlib

    assert body["input_sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(f"/scores/{body['id']}").json() == body
    assert [s["id"] for s in client.get("/scores").json()["data"]] == [body["id"]]
    other = {"X-API-Key": new_key("acme")}
    assert client.get(f"/scores/{body['id']}", headers=other).status_code == 404
    assert client.get("/scores", headers=other).json()["data"] == []


def test_regression_predictions_are_scored_by_their_absolute_error(client):
    rng = np.random.default_rng(1)
    targets = rng.uniform(20, 60, 15)
    reference = targets + rng.normal(0, 3, (5, 15))
    unlearned = targets + rng.normal(0, 1, (5, 15))
    r = _post(client, _npz(reference=reference, unlearned=unlearned, targets=targets))
    assert r.status_code == 201, r.text
    exact = epsilon_hat_regression(reference, unlearned, targets)
    stats = (regression_statistic(p, targets) for p in (reference, unlearned))
    assert r.json()["results"]["logits"] == exact.to_json() | resolution(exact, *stats).to_json()


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"not a zip at all", "neither an .npz"),
        (_npz(reference=np.zeros((2, 3, 4)), unlearned=np.zeros((2, 3, 4))), "labels"),
        (
            _npz(reference=np.zeros((2, 3, 4)), unlearned=np.zeros((2, 5, 4)), labels=np.zeros(3, int)),
            "same samples",
        ),
        (
            _npz(reference=np.array([{"a": 1}], dtype=object), unlearned=np.zeros(1), labels=np.zeros(1)),
            "not a plain .npy",
        ),
    ],
    ids=["not-a-zip", "no-labels", "mismatched-shapes", "pickled-objects"],
)
def test_bad_files_are_422_naming_the_problem_and_nothing_is_kept(client, payload, needle):
    r = _post(client, payload)
    assert r.status_code == 422, r.text
    assert needle in json.dumps(r.json()["detail"])
    assert client.get("/scores").json()["count"] == 0


def test_bad_delta_and_missing_file_are_422(client):
    assert _post(client, _npz(**_logits(0)), delta="1.5").status_code == 422
    assert _post(client, _npz(**_logits(0)), delta="nan").status_code == 422
    assert _post(client, _npz(**_logits(0)), bootstrap="0").status_code == 422
    assert client.post("/scores", data={"delta": "0.1"}).status_code == 422


def test_a_zip_that_would_unpack_past_the_limit_is_413_before_it_is_read(client, monkeypatch):
    monkeypatch.setenv("LETHE_MAX_SCORE_UNPACKED_BYTES", "100000")
    reset_caches()
    client.headers["X-API-Key"] = new_key("local")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("reference.npy", b"\0" * 200_000)  # compresses to a few hundred bytes
    r = _post(client, buf.getvalue())
    assert r.status_code == 413 and "unpacks to 200000 bytes" in r.json()["detail"]


def test_an_upload_over_the_upload_limit_is_413(client, monkeypatch):
    monkeypatch.setenv("LETHE_MAX_UPLOAD_BYTES", "4096")
    reset_caches()
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as small:
        r = _post(small, b"\0" * 10_000)
    assert r.status_code == 413


def _seed_zip(folder: Path, approaches: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and (len(rel.parts) == 1 or rel.parts[0] in approaches):
                zf.write(path, f"seed-cifar10/{rel.as_posix()}")
    return buf.getvalue()


TABLE_1 = {
    "baseline": 0.875,
    "prune_complex": 2.197,
    "prune_last_layer": 2.303,
    "hybrid": 2.833,
    "prune": 3.219,
    "activation_reset": 3.584,
    "finetune": 3.738,
    "poison": 4.159,
    "poison_full": 4.205,
}
"""The study's Table 1 (epsilon-hat at delta 0.05, 80 + 80 models, 1000 samples), as docs/epsilon.md gives it."""


def test_the_studys_published_logits_give_the_studys_epsilon_hat(client, golden_dir):
    from cli.main import app

    # One bootstrap replicate on both sides: the interval is not what this checks, and 80 + 80 models x
    # 1000 samples x 9 approaches at the default 125 replicates costs half a minute of CPU.
    r = _post(client, _seed_zip(golden_dir, list(TABLE_1)), name="seed.zip", bootstrap="1")
    assert r.status_code == 201, r.text
    results = r.json()["results"]
    assert {name: round(v["epsilon_hat"], 3) for name, v in results.items()} == TABLE_1
    cli = CliRunner().invoke(
        app, ["epsilon", "--seed-dir", str(golden_dir), "--all", "--json", "--bootstrap", "1"]
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output) == results  # the same figures as lethe epsilon, to the last digit
    one = _post(
        client, _seed_zip(golden_dir, ["finetune"]), name="seed.zip", approach="finetune", bootstrap="1"
    )
    assert one.json()["results"] == {"finetune": results["finetune"]}


def test_an_unknown_approach_in_a_seed_zip_is_422(client, golden_dir):
    r = _post(client, _seed_zip(golden_dir, []), name="seed.zip", approach="nope")
    assert r.status_code == 422 and "unknown approach 'nope'" in json.dumps(r.json())
