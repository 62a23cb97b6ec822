"""The convergence benchmark runs end to end on a small folder in the study's layout and writes its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.metrics.epsilon import epsilon_ceiling
from tests.benchmarks import run_benchmark

pytestmark = pytest.mark.slow


def seed_folder(root: Path) -> Path:
    """12 reference and 12 unlearned models on 20 samples, the study's layout (slot 0: one-hot labels)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=20)
    one_hot = np.eye(3)[labels][:, None, :]

    def logits(shift: float) -> np.ndarray:
        z = rng.normal(size=(20, 12, 3))
        z[np.arange(20), :, labels] += shift
        return np.concatenate([one_hot, z], axis=1).astype(np.float32)

    rows = "seed,retain_accuracy,forget_accuracy,test_accuracy\n" + "".join(
        f"{s},0.9,0.9,0.8\n" for s in range(12)
    )
    root.mkdir()
    np.save(root / "logits_retain.npy", logits(1.0))
    (root / "metrics.csv").write_text(rows)
    (root / "alpha").mkdir()
    np.save(root / "alpha" / "logits_unlearn.npy", logits(3.0))
    (root / "alpha" / "metrics.csv").write_text(rows)
    return root


def test_convergence_lines_and_figure(tmp_path: Path) -> None:
    folder, out = seed_folder(tmp_path / "seed"), tmp_path / "out"
    done = run_benchmark(
        "bench_convergence.py",
        "--seed-dir",
        str(folder),
        "--sizes",
        "4,6,12",
        "--repeats",
        "2",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["models_per_group"] for line in lines if line["bench"] == "bootstrap_models"] == [8, 80]
    sizes = [(line["approach"], line["m"]) for line in lines if line["bench"] == "convergence"]
    # The baseline splits the 12 reference models into 6 + 6, so it stops at 6.
    assert sizes == [("baseline", 4), ("baseline", 6), ("alpha", 4), ("alpha", 6), ("alpha", 12)]
    for line in lines:
        if line["bench"] == "convergence":
            assert line["ceiling"] == epsilon_ceiling(line["m"], line["m"])
            everything = line["m"] == (6 if line["approach"] == "baseline" else 12)
            assert line["draws"] == (1 if everything else 2)
            assert line["study"]["min"] <= line["study"]["median"] <= line["study"]["max"]
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [json.loads(x) for x in (out / "convergence.jsonl").read_text().splitlines()] == lines[:-1]
