"""`lethe epsilon` on a small folder in the study's layout, on our own arrays, and on bad arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli.epsilon import epsilon_command
from ml.metrics.epsilon import EpsilonResult, epsilon_hat, hinge_statistic
from ml.metrics.resolution import resolution
from ml.metrics.seed_layout import load_approach

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "seed-cifar10"
N_SAMPLES, N_MODELS, N_CLASSES = 12, 6, 4

app = typer.Typer()
app.command()(epsilon_command)
runner = CliRunner(env={"COLUMNS": "200"})


def seed_array(rng: np.random.Generator, labels: np.ndarray, shift: float) -> np.ndarray:
    """[n, M + 1, C] with the one-hot label in slot 0 and logits favouring the label by `shift`."""
    logits = rng.normal(size=(N_SAMPLES, N_MODELS, N_CLASSES))
    logits[np.arange(N_SAMPLES), :, labels] += shift
    one_hot = np.eye(N_CLASSES)[labels][:, None, :]
    return np.concatenate([one_hot, logits], axis=1).astype(np.float32)


def write_metrics(path: Path, retain: float) -> None:
    rows = [f"{s},{retain + 0.001 * s},0.9,0.8" for s in range(N_MODELS)]
    path.write_text("seed,retain_accuracy,forget_accuracy,test_accuracy\n" + "\n".join(rows) + "\n")


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    """A folder in the study's layout: reference models, a baseline, and approaches alpha and beta."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, N_CLASSES, size=N_SAMPLES)
    root = tmp_path / "seed"
    root.mkdir()
    np.save(root / "logits_retain.npy", seed_array(rng, labels, 2.0))
    write_metrics(root / "metrics.csv", 0.99)
    (root / "baseline").mkdir()
    write_metrics(root / "baseline" / "metrics.csv", 0.99)
    for name, shift in (("alpha", 4.0), ("beta", 2.0)):
        (root / name).mkdir()
        np.save(root / name / "logits_unlearn.npy", seed_array(rng, labels, shift))
        write_metrics(root / name / "metrics.csv", 0.95)
    return root


def expected_json(result: EpsilonResult, ref: np.ndarray, unl: np.ndarray, labels: np.ndarray) -> dict:
    """What --json prints: the study's figures and their resolution, interval over models and smooth estimate."""
    res = resolution(result, hinge_statistic(ref, labels), hinge_statistic(unl, labels))
    return json.loads(json.dumps(result.to_json() | res.to_json()))


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_one_approach_as_json(seed_dir: Path) -> None:
    code, out, _ = invoke("--seed-dir", seed_dir, "--approach", "alpha", "--json", "--delta", "0.1")
    assert code == 0
    data = load_approach(seed_dir, "alpha")
    expected = epsilon_hat(data.reference_logits, data.unlearned_logits, data.labels, delta=0.1)
    assert json.loads(out) == expected_json(
        expected, data.reference_logits, data.unlearned_logits, data.labels
    )
    assert json.loads(out)["n_reference"] == json.loads(out)["n_unlearned"] == N_MODELS
    assert json.loads(out)["bootstrap_replicates"] == 1000


def test_baseline_splits_the_reference_models(seed_dir: Path) -> None:
    code, out, _ = invoke("--seed-dir", seed_dir, "--approach", "baseline", "--json")
    assert code == 0
    assert (json.loads(out)["n_reference"], json.loads(out)["n_unlearned"]) == (3, 3)


def test_all_approaches(seed_dir: Path) -> None:
    code, out, _ = invoke("--seed-dir", seed_dir, "--all", "--json")
    assert code == 0
    table = json.loads(out)
    assert list(table) == ["baseline", "alpha", "beta"]
    for name, row in table.items():
        data = load_approach(seed_dir, name)
        expected = epsilon_hat(data.reference_logits, data.unlearned_logits, data.labels)
        assert row["epsilon_hat"] == json.loads(json.dumps(expected.to_json()))["epsilon_hat"]
    assert table["alpha"]["retain_accuracy"] == pytest.approx(0.95 + 0.0025)
    assert table["alpha"]["test_accuracy"] == pytest.approx(0.8)
    code, out, _ = invoke("--seed-dir", seed_dir, "--all")
    assert code == 0
    assert "alpha" in out and "beta" in out and "0.9525" in out


def test_human_readable_single(seed_dir: Path) -> None:
    data = load_approach(seed_dir, "beta")
    expected = epsilon_hat(data.reference_logits, data.unlearned_logits, data.labels)
    code, out, _ = invoke("--seed-dir", seed_dir, "--approach", "beta")
    assert code == 0
    assert f"{expected.epsilon_hat:.3f}" in out
    assert "epsilon-hat (delta 0.05)" in out


def test_own_layout_and_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref, unl = rng.normal(size=(5, 8, 3)), rng.normal(size=(7, 8, 3)) + 0.5
    labels = rng.integers(0, 3, size=8)
    for name, array in (("R.npy", ref), ("U.npy", unl), ("L.npy", labels)):
        np.save(tmp_path / name, array)
    png = tmp_path / "curve.png"
    code, out, err = invoke(
        "--retain",
        tmp_path / "R.npy",
        "--unlearn",
        tmp_path / "U.npy",
        "--labels",
        tmp_path / "L.npy",
        "--json",
        "--plot",
        png,
    )
    assert code == 0
    expected = epsilon_hat(ref, unl, labels)
    assert json.loads(out) == expected_json(expected, ref, unl, labels)
    assert (json.loads(out)["n_reference"], json.loads(out)["n_unlearned"], json.loads(out)["n_samples"]) == (
        5,
        7,
        8,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot written" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--approach", "nope"], "unknown approach 'nope'"),
        ([], "exactly one of --approach NAME or --all"),
        (["--approach", "alpha", "--all"], "exactly one of --approach NAME or --all"),
        (["--approach", "alpha", "--delta", "1.5"], "--delta must lie in [0, 1)"),
        (["--approach", "alpha", "--labels", "x.npy"], "not both"),
        (["--approach", "alpha", "--plot", "/no/such/folder/x.png"], "does not exist"),
    ],
)
def test_bad_seed_arguments(seed_dir: Path, args: list[str], message: str) -> None:
    code, out, err = invoke("--seed-dir", seed_dir, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_bad_own_arguments(tmp_path: Path, seed_dir: Path) -> None:
    np.save(tmp_path / "R.npy", np.zeros((3, 5, 4)))
    np.save(tmp_path / "U.npy", np.zeros((3, 6, 4)))
    np.save(tmp_path / "L.npy", np.zeros(5, dtype=int))
    (tmp_path / "bad.npy").write_text("not an array")
    cases = [
        (["--retain", tmp_path / "R.npy"], "all three of --retain, --unlearn and --labels"),
        (
            [
                "--retain",
                tmp_path / "missing.npy",
                "--unlearn",
                tmp_path / "U.npy",
                "--labels",
                tmp_path / "L.npy",
            ],
            "--retain: ",
        ),
        (
            ["--retain", tmp_path / "R.npy", "--unlearn", tmp_path / "U.npy", "--labels", tmp_path / "L.npy"],
            "same samples",
        ),
        (
            [
                "--retain",
                tmp_path / "bad.npy",
                "--unlearn",
                tmp_path / "R.npy",
                "--labels",
                tmp_path / "L.npy",
            ],
            "not a readable .npy",
        ),
        (
            ["--retain", tmp_path / "R.npy", "--unlearn", tmp_path / "R.npy", "--labels", tmp_path / "R.npy"],
            "labels must be [5]",
        ),
        (["--all"], "need --seed-dir"),
        (["--seed-dir", tmp_path / "nowhere", "--all"], "is not a folder"),
        (["--seed-dir", seed_dir / "alpha", "--all"], "no approaches"),
    ]
    for args, message in cases:
        code, out, err = invoke(*args)
        assert (code, out) == (2, ""), args
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (args, err)


def test_published_finetune() -> None:
    if not GOLDEN.is_dir():
        pytest.skip(f"the study's published logits are not at {GOLDEN}")
    code, out, _ = invoke("--seed-dir", GOLDEN, "--approach", "finetune", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["epsilon_hat"] == pytest.approx(3.738, abs=1e-3)
    assert (data["n_samples"], data["n_infinite"], data["mean"], data["ci95"]) == (1000, 30, "inf", None)


def corrupt_label_slot(root: Path) -> None:
    array = np.load(root / "alpha" / "logits_unlearn.npy")
    array[0, 0] = 0.5
    np.save(root / "alpha" / "logits_unlearn.npy", array)


def relabel(root: Path) -> None:
    array = np.load(root / "alpha" / "logits_unlearn.npy")
    array[0, 0] = np.roll(array[0, 0], 1)
    np.save(root / "alpha" / "logits_unlearn.npy", array)


def drop_samples(root: Path) -> None:
    np.save(root / "alpha" / "logits_unlearn.npy", np.load(root / "alpha" / "logits_unlearn.npy")[:-1])


def break_metrics(root: Path) -> None:
    (root / "alpha" / "metrics.csv").write_text("seed,retain_accuracy\n0,0.9\n")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (corrupt_label_slot, "slot 0 of every sample must be the one-hot true label"),
        (relabel, "label slot differs"),
        (drop_samples, "unlearned logits cover 11 samples"),
        (break_metrics, "missing columns forget_accuracy, test_accuracy"),
    ],
)
def test_malformed_seed_folder(seed_dir: Path, corrupt: Callable[[Path], None], message: str) -> None:
    corrupt(seed_dir)
    code, out, err = invoke("--seed-dir", seed_dir, "--approach", "alpha")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and message in err


def test_resolution_in_words_and_bootstrap_replicates(seed_dir: Path) -> None:
    code, out, _ = invoke("--seed-dir", seed_dir, "--approach", "alpha", "--json", "--bootstrap", "30")
    assert code == 0
    data = json.loads(out)
    assert data["bootstrap_replicates"] == 30 and data["epsilon_ceiling"] == pytest.approx(1.5475625)
    low, high = data["epsilon_hat_ci95_models"]
    assert low == "inf" or low <= (high if high != "inf" else float("inf"))
    code, out, _ = invoke("--seed-dir", seed_dir, "--approach", "alpha")
    assert code == 0 and "ceiling at these group sizes" in out and "1.548" in out
    assert data["resolution_note"].split(":")[0] in out
    code, _, err = invoke("--seed-dir", seed_dir, "--approach", "alpha", "--bootstrap", "0")
    assert code == 2 and err.startswith("error: --bootstrap")


def test_censored_figures_are_named_in_words(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=10)
    ref = rng.normal(size=(3, 10, 3))
    unl = rng.normal(size=(3, 10, 3))
    unl[:, np.arange(10), labels] += 30.0  # every sample perfectly separable: infinite
    for name, array in (("R.npy", ref), ("U.npy", unl), ("L.npy", labels)):
        np.save(tmp_path / name, array)
    args = ("--retain", tmp_path / "R.npy", "--unlearn", tmp_path / "U.npy", "--labels", tmp_path / "L.npy")
    code, out, _ = invoke(*args)
    assert code == 0 and "censored: at least half the samples are at the ceiling 0.615 or infinite" in out
    code, out, _ = invoke(*args, "--json")
    assert json.loads(out)["censored"] is True and json.loads(out)["epsilon_hat"] == "inf"
