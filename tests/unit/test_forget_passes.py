"""Methods that climb a loss on the forget set: NegGrad+ weighs its forget loss per sample and SCRUB scales its
max-steps below a batch, so a forget sample's push does not grow as the set shrinks; NegGrad+'s and gradient
ascent's forget forwards leave BatchNorm's running statistics alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.data import ArrayDataset
from ml.methods import UnlearnData, packed_loops, run_method, scrub
from ml.methods.neggrad_plus import forget_weight
from ml.methods.packed import run_packed
from ml.methods.params import NegGradPlusParams, ScrubParams
from ml.methods.scrub import max_step_scale
from ml.specs import ArchSpec, Recipe
from tests.unit.test_methods import state

ARCH = ArchSpec(width=8)
RECIPE = Recipe(epochs=8, batch_size=32, lr=0.05, schedule="cosine")


def small_set(digits: ArrayDataset) -> UnlearnData:
    """Eight random forget samples of 400: 2% of the training set."""
    forget = np.sort(np.random.default_rng(3).choice(len(digits.train_y), 8, replace=False))
    return UnlearnData(digits, forget, recipe=RECIPE, arch=ARCH)


def test_the_forget_weight_grows_with_the_set_when_per_sample() -> None:
    on = NegGradPlusParams(alpha=0.67)
    off = NegGradPlusParams(alpha=0.67, per_sample=False)
    assert forget_weight(on, 29, 1408) == pytest.approx(0.33 * 29 / 1408)
    assert forget_weight(on, 7, 1430) == pytest.approx(0.33 * 7 / 1430)
    # Each forget sample climbs with (1 - alpha) / alpha of a retain sample's weight, whatever the size.
    for n_forget, n_retain in [(7, 1430), (29, 1408), (144, 1293)]:
        per_forget_sample = forget_weight(on, n_forget, n_retain) / n_forget
        per_retain_sample = on.alpha / n_retain
        assert per_forget_sample / per_retain_sample == pytest.approx(0.33 / 0.67)
    assert forget_weight(off, 7, 1430) == forget_weight(off, 144, 1293) == pytest.approx(0.33)


def test_the_forget_weight_used_is_recorded_for_the_models_metrics(
    trained: torch.nn.Module, digits: ArrayDataset
) -> None:
    data = small_set(digits)
    details: dict = {}
    run_method("neggrad_plus", trained, data, {"epochs": 1, "batch_size": 64}, seed=0, details=details)
    assert details == {"forget_weight": pytest.approx(0.1 * 8 / 392)}
    assert NegGradPlusParams().per_sample and NegGradPlusParams().alpha == 0.9


@pytest.mark.parametrize("packed", [False, True])
def test_per_sample_is_the_batch_mean_form_with_its_weights_rescaled(
    trained: torch.nn.Module, digits: ArrayDataset, packed: bool
) -> None:
    """Without weight decay, SGD's step is linear in the loss: alpha L_r - w L_f at lr equals
    (alpha / k) L_r - (w / k) L_f at lr x k, with k = alpha + w. So the per-sample run must be the batch-mean
    run at alpha' = alpha / k and lr' = lr x k, step for step; it is not the batch-mean run at alpha."""
    data = small_set(digits)
    alpha, lr = 0.5, 0.02
    w = (1 - alpha) * len(data.forget_ids) / len(data.retain_ids)
    k = alpha + w
    common = {"epochs": 1, "batch_size": 32, "weight_decay": 0.0}
    per_sample = {**common, "alpha": alpha, "lr": lr}
    rescaled = {**common, "alpha": alpha / k, "lr": lr * k, "per_sample": False}
    unscaled = {**common, "alpha": alpha, "lr": lr, "per_sample": False}

    def run(params: dict[str, object]) -> dict[str, torch.Tensor]:
        if packed:
            return state(run_packed("neggrad_plus", trained, data, params, seeds=(5, 6))[1])
        return state(run_method("neggrad_plus", trained, data, params, seed=6))

    a, b, c = run(per_sample), run(rescaled), run(unscaled)
    start = state(trained)
    for name, value in a.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, b[name], rtol=1e-4, atol=1e-5, msg=name)
    moved = max((a[n] - start[n]).abs().max().item() for n in a if a[n].is_floating_point())
    apart = max((a[n] - c[n]).abs().max().item() for n in a if a[n].is_floating_point())
    assert moved > 1e-3 and apart > 1e-3


def norm_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("packed", [False, True])
def test_forget_forwards_leave_the_running_statistics_to_the_retain_set(
    trained: torch.nn.Module, digits: ArrayDataset, packed: bool
) -> None:
    """Eight forget samples of 400 make up half of NegGrad+'s forwards; updated by them, BatchNorm's running
    statistics (what the unlearned model normalises with at test time) were an average over tiny forget batches
    and retain batches (2 points of test accuracy at 0.5% of digits, at zero forget weight). With the weights
    held still (lr 1e-30), the running statistics must not depend on what the forget samples look like, and
    count only the retain batches."""
    data = small_set(digits)
    x = digits.train_x.copy()
    x[data.forget_ids] = np.random.default_rng(0).integers(0, 17, x[data.forget_ids].shape).astype(x.dtype)
    other = replace(data, dataset=replace(digits, train_x=x))
    params = {"epochs": 2, "batch_size": 32, "lr": 1e-30}

    def run(d: UnlearnData) -> dict[str, torch.Tensor]:
        if packed:
            return norm_stats(run_packed("neggrad_plus", trained, d, params, seeds=(5, 6))[1])
        return norm_stats(run_method("neggrad_plus", trained, d, params, seed=6))

    a, b = run(data), run(other)
    start = norm_stats(trained)
    retain_batches = 2 * -(-len(data.retain_ids) // 32)
    for name, value in a.items():
        if "num_batches" in name:
            assert value.item() - start[name].item() == retain_batches, name
        else:
            torch.testing.assert_close(value, b[name], rtol=1e-5, atol=1e-6, msg=name)
            assert not torch.equal(value, start[name]), name  # the retain batches did move them


@pytest.mark.parametrize("packed", [False, True])
def test_gradient_ascent_keeps_the_originals_running_statistics(
    trained: torch.nn.Module, digits: ArrayDataset, packed: bool
) -> None:
    """Every forward of gradient ascent is on the forget set; the model must not end up normalising test
    inputs with the forget batches' statistics. Its weights do move."""
    data = small_set(digits)
    params = {"epochs": 3, "batch_size": 4, "lr": 0.01, "scale_lr": False}
    if packed:
        model = run_packed("gradient_ascent", trained, data, params, seeds=(5, 6))[1]
    else:
        model = run_method("gradient_ascent", trained, data, params, seed=6)
    after, start = state(model), state(trained)
    for name in norm_stats(trained):
        assert torch.equal(after[name], start[name]), name
    assert max((after[n] - start[n]).abs().max().item() for n in start if "weight" in n) > 1e-3


def test_scrub_scales_its_max_steps_below_one_batch() -> None:
    p = ScrubParams()
    assert p.forget_batch_size == 32 and p.scale_max_steps
    assert max_step_scale(p, 7) == 7 / 32 and max_step_scale(p, 29) == 29 / 32
    assert max_step_scale(p, 32) == max_step_scale(p, 144) == 1.0
    assert max_step_scale(ScrubParams(scale_max_steps=False), 7) == 1.0


@pytest.mark.parametrize("packed", [False, True])
def test_scrubs_first_max_step_climbs_its_loss_scaled_by_the_sets_share_of_a_batch(
    trained: torch.nn.Module, digits: ArrayDataset, packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both runs start from the same model on the same first forget batch, so the first loss SCRUB steps on
    (its first max-step's) is the unscaled one times 8 / 32 exactly."""
    data = small_set(digits)
    module = packed_loops if packed else scrub
    seen: list[torch.Tensor] = []
    step = module._update

    def recording(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        seen.append(loss.detach().clone())
        step(optimizer, loss)

    monkeypatch.setattr(module, "_update", recording)
    first = []
    for scale in (True, False):
        seen.clear()
        params = {"epochs": 1, "max_epochs": 1, "batch_size": 64, "scale_max_steps": scale}
        if packed:
            run_packed("scrub", trained, data, params, seeds=(5, 6))
        else:
            run_method("scrub", trained, data, params, seed=6)
        first.append(seen[0])
    assert (first[1] < 0).all()  # a max-step: the KL climbed, as a negative loss
    torch.testing.assert_close(first[0], first[1] * (8 / 32))
