"""The CUDA path of ml/: it learns, agrees with the CPU, and never syncs with the host inside the step loop.

These need a CUDA device and skip without one, so CI (no GPU) skips them. They import ml/ and none of the
service (no FastAPI, SQLAlchemy or Celery), so on a GPU machine they run with torch and pydantic alone:

    python -m pytest --noconftest tests/gpu
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.data import ArrayDataset, load_dataset
from ml.logits import accuracy, logits
from ml.methods import METHOD_SPECS, UnlearnData, run_method
from ml.models import build_model
from ml.specs import ArchSpec, AugmentSpec, Recipe
from ml.trainer import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ARCH = ArchSpec(width=16)


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_dataset("digits")


def fresh(data: ArrayDataset, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH, data.num_classes, data.in_channels)


def test_the_fast_path_learns_digits_and_hands_back_plain_weights(digits) -> None:
    """bf16 autocast + channels_last (the CUDA default) reaches the accuracy fp32 reaches on the CPU."""
    model = fresh(digits)
    stats = fit(
        model, digits, None, epochs=8, lr=0.05, batch_size=64, seed=0, device="cuda", schedule="cosine"
    )
    assert stats.steps == 8 * -(-digits.n_train // 64) and stats.samples == 8 * digits.n_train
    assert accuracy(model, digits, None, split="test", device="cuda") > 0.93
    for key, value in model.state_dict().items():
        assert value.is_cuda and value.is_contiguous(), key


def test_cuda_logits_match_the_cpus(digits) -> None:
    """Inference runs in fp32 without TF32, so the same weights give the CPU's logits closely."""
    model = fresh(digits)
    fit(model, digits, np.arange(300), epochs=1, lr=0.05, batch_size=64, seed=0, device="cuda")
    on_gpu = logits(model, digits, None, split="test", device="cuda")
    on_cpu = logits(model, digits, None, split="test", device="cpu")
    rel = np.linalg.norm(on_gpu - on_cpu) / np.linalg.norm(on_cpu)
    assert rel < 1e-4, rel


def test_same_seed_same_weights_on_cuda(digits) -> None:
    """Seeded shuffling and augmentation on the device: two runs of one seed end at nearly equal weights.

    cudnn.benchmark may pick different kernels run to run, so equality is to rounding, not bit for bit.
    """
    recipe = AugmentSpec(crop_padding=2, flip=True)
    runs = []
    for _ in range(2):
        model = fresh(digits)
        fit(model, digits, None, epochs=2, lr=0.05, batch_size=64, seed=5, device="cuda", augment=recipe)
        runs.append(torch.cat([p.detach().float().flatten() for p in model.parameters()]))
    other = fresh(digits)
    fit(other, digits, None, epochs=2, lr=0.05, batch_size=64, seed=6, device="cuda", augment=recipe)
    moved = torch.cat([p.detach().float().flatten() for p in other.parameters()])
    same = (runs[0] - runs[1]).norm() / runs[0].norm()
    differ = (runs[0] - moved).norm() / runs[0].norm()
    assert same < 0.2 * differ, (same.item(), differ.item())


def _syncs(data: ArrayDataset, n: int, augment: AugmentSpec | None) -> int:
    """Host-device synchronisations torch reports during one epoch of fit over n rows (batch 32)."""
    model = fresh(data)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(
                model,
                data,
                np.arange(n),
                epochs=1,
                lr=0.05,
                batch_size=32,
                seed=0,
                device="cuda",
                augment=augment,
            )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    "augment",
    [None, AugmentSpec(crop_padding=2, flip=True)],
    ids=["plain", "crop_flip"],
)
def test_no_host_sync_inside_the_step_loop(digits, augment) -> None:
    """Three times the steps, the same number of syncs: none happens per step, only at the epoch's end."""
    _syncs(digits, 64, augment)  # first call: cudnn autotuning and lazy initialisation
    short = _syncs(digits, 320, augment)
    long = _syncs(digits, 960, augment)
    assert long == short, (short, long)


def test_autoaugment_runs_on_the_device(digits) -> None:
    """The study's CIFAR augmentation (crop, flip, AutoAugment) trains on CUDA; RGB data as CIFAR's."""
    rgb = replace(
        digits,
        train_x=np.repeat(digits.train_x, 3, axis=1),
        test_x=np.repeat(digits.test_x, 3, axis=1),
        mean=tuple(digits.mean) * 3,
        std=tuple(digits.std) * 3,
    )
    model = fresh(rgb)
    augment = AugmentSpec(crop_padding=2, flip=True, autoaugment="cifar10")
    stats = fit(
        model, rgb, np.arange(512), epochs=1, lr=0.05, batch_size=128, seed=0, device="cuda", augment=augment
    )
    assert stats.steps == 4 and np.isfinite(stats.loss)


def test_inductor_with_cuda_graphs_learns_digits_and_keeps_the_state_dict_keys(digits) -> None:
    """The worker's LETHE_TORCH_COMPILE path: inductor in CUDA_COMPILE_MODE, a ragged last batch included."""
    model = fresh(digits)
    keys = list(model.state_dict())
    stats = fit(
        model,
        digits,
        None,
        epochs=6,
        lr=0.05,
        batch_size=64,
        seed=0,
        device="cuda",
        schedule="cosine",
        compile_model=True,
        compile_backend="inductor",
    )
    assert stats.compiled and digits.n_train % 64
    assert list(model.state_dict()) == keys
    assert accuracy(model, digits, None, split="test", device="cuda") > 0.93


TEST_ACCURACY_FLOOR = 0.85
"""Every method keeps a useful model: over seeds 0-4 of this set-up run on a CPU (fp32) each scored 0.91 to
0.99 on the test split (chance is 0.1), except SSD, whose default dampening fell to 0.61 and 0.48 on two."""
FLOORS = {"ssd": 0.3}
"""SSD's test accuracy over seeds 0-4 on a CPU: 0.48 to 0.97."""


@pytest.mark.parametrize("name", sorted(METHOD_SPECS))
def test_every_method_runs_on_cuda(digits, name) -> None:
    """Each method on CUDA returns a model on the device that still classifies the test split well."""
    model = fresh(digits)
    fit(model, digits, None, epochs=3, lr=0.05, batch_size=64, seed=0, device="cuda")
    forget = np.arange(0, digits.n_train, 10)
    data = UnlearnData(digits, forget, recipe=Recipe(epochs=2, batch_size=64, lr=0.05), arch=ARCH)
    out = run_method(name, model, data, {}, seed=0, device="cuda")
    assert next(out.parameters()).is_cuda
    assert accuracy(out, digits, None, split="test", device="cuda") > FLOORS.get(name, TEST_ACCURACY_FLOOR)
