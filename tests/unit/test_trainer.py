"""The trainer: reproducible, reports progress, stops on request, honours schedules, labels, augmentation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.augment import AutoAugment, Normalizer, build_augmenter, crop_flip
from ml.data import ArrayDataset, load_dataset
from ml.errors import Cancelled, Diverged
from ml.logits import accuracy, mae, predict
from ml.models import build_model
from ml.specs import STUDY_CIFAR10_RECIPE, ArchSpec, AugmentSpec, Recipe
from ml.trainer import ProgressEvent, fit, lr_factor, make_optimizer, make_scheduler, train

ARCH = ArchSpec(width=4)
QUICK = Recipe(epochs=2, batch_size=32, lr=0.05, schedule="none")


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    full = load_dataset("digits")
    return replace(
        full,
        train_x=full.train_x[:200],
        train_y=full.train_y[:200],
        test_x=full.test_x[:100],
        test_y=full.test_y[:100],
    )


def fresh(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ArchSpec(width=width), 10, 1)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_bit_identical_weights_and_other_seeds_differ(digits: ArrayDataset) -> None:
    runs = []
    for seed in (7, 7, 8):
        model = fresh()
        train(model, digits, None, QUICK, seed=seed)
        runs.append(weights(model))
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])


def test_training_learns_digits(digits: ArrayDataset) -> None:
    full = load_dataset("digits")
    model = fresh(width=8)
    stats = train(
        model, full, np.arange(600), Recipe(epochs=5, batch_size=32, lr=0.05, schedule="cosine"), seed=0
    )
    assert stats.epochs == 5 and stats.samples == 5 * 600
    assert accuracy(model, full, None, split="test") > 0.8


def test_train_leaves_the_global_random_state_alone(digits: ArrayDataset) -> None:
    model = fresh()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(model, digits, None, QUICK, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_progress_reports_every_epoch_and_ends_at_one(digits: ArrayDataset) -> None:
    events: list[ProgressEvent] = []
    fit(
        fresh(),
        digits,
        np.arange(100),
        epochs=3,
        lr=0.01,
        batch_size=10,
        seed=0,
        progress=events.append,
        stage="demo",
        report_every=4,
    )
    steps = [e.step for e in events]
    assert steps == sorted(steps) and events[-1].step == events[-1].steps == 30
    assert [e.fraction for e in events] == [s / 30 for s in steps]
    assert events[-1].fraction == 1.0 and events[-1].epoch == 3
    assert {e.epochs for e in events} == {3} and {e.stage for e in events} == {"demo"}
    assert {10, 20, 30} <= set(steps) and 4 in steps
    assert all(0 <= e.accuracy <= 1 and np.isfinite(e.loss) for e in events)


def test_stop_flag_is_checked_before_every_step_and_raises_cancelled(digits: ArrayDataset) -> None:
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls == 9

    with pytest.raises(Cancelled):
        fit(fresh(), digits, None, epochs=5, lr=0.01, batch_size=50, seed=0, should_stop=stop)
    assert calls == 9  # 4 steps per epoch: the 9th check is the first step of epoch 3


def test_until_ends_training_early(digits: ArrayDataset) -> None:
    stats = fit(fresh(), digits, None, epochs=5, lr=0.01, batch_size=50, seed=0, until=lambda: True)
    assert stats.epochs == 1 and stats.steps == 4


def test_labels_override_the_data_set_targets(digits: ArrayDataset) -> None:
    model = fresh()
    fit(model, digits, None, epochs=3, lr=0.05, batch_size=32, seed=0, labels=np.full(digits.n_train, 3))
    assert np.mean(predict(model, digits, None, split="test") == 3) > 0.9


def test_bad_ids_and_labels_are_rejected(digits: ArrayDataset) -> None:
    with pytest.raises(ValueError, match="one entry per id"):
        fit(fresh(), digits, np.arange(10), epochs=1, lr=0.01, seed=0, labels=np.zeros(9, dtype=np.int64))
    with pytest.raises(ValueError, match="sample ids"):
        fit(fresh(), digits, np.array([0, digits.n_train]), epochs=1, lr=0.01, seed=0)


def test_a_final_batch_of_one_sample_trains(digits: ArrayDataset) -> None:
    stats = fit(fresh(), digits, np.arange(33), epochs=1, lr=0.01, batch_size=32, seed=0)
    assert stats.steps == 2 and np.isfinite(stats.loss)


def test_nothing_to_train_returns_at_once(digits: ArrayDataset) -> None:
    model = fresh()
    before = weights(model)
    assert fit(model, digits, np.zeros(0, dtype=np.int64), epochs=3, lr=0.1, seed=0).steps == 0
    assert same(before, weights(model))


def test_a_diverging_run_raises(digits: ArrayDataset) -> None:
    with pytest.raises(Diverged):
        fit(fresh(), digits, None, epochs=2, lr=1e30, batch_size=50, seed=0)


def test_adam_and_every_schedule_reduce_the_loss(digits: ArrayDataset) -> None:
    for optimizer, schedule in [
        ("adam", "none"),
        ("sgd", "multistep"),
        ("sgd", "cosine"),
        ("sgd", "onecycle"),
    ]:
        recipe = Recipe(
            epochs=3,
            batch_size=32,
            lr=0.01 if optimizer == "adam" else 0.05,
            optimizer=optimizer,
            schedule=schedule,
            milestones=[2] if schedule == "multistep" else [],
        )
        events: list[ProgressEvent] = []
        train(fresh(), digits, None, recipe, seed=0, progress=events.append)
        ends = [e.loss for e in events if e.step % 7 == 0]  # 7 steps per epoch
        assert ends[-1] < ends[0], (optimizer, schedule)


def test_schedules_follow_their_definitions() -> None:
    assert lr_factor("none", 50, 10, 100, [], 0.1) == 1.0
    assert [lr_factor("multistep", s, 10, 100, [3, 6], 0.1) for s in (29, 30, 60)] == pytest.approx(
        [1, 0.1, 0.01]
    )
    assert lr_factor("cosine", 0, 10, 100, [], 0.1) == 1.0
    assert lr_factor("cosine", 50, 10, 100, [], 0.1) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 10, 100, [], 0.1) == pytest.approx(0.0)
    opt = make_optimizer(fresh(), "sgd", 0.2, 0.9, True, 5e-4)
    sched = make_scheduler(opt, "onecycle", 0.2, 10, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.2, rel=1e-3) and lrs[0] < 0.02 and lrs[-1] < 1e-3


def test_sgd_without_momentum_drops_nesterov() -> None:
    opt = make_optimizer(fresh(), "sgd", 0.1, 0.0, True, 0.0)
    assert opt.param_groups[0]["nesterov"] is False


REGRESSION_SEEDS = 4


def test_regression_trains_on_scaled_targets_without_accuracy(digits: ArrayDataset) -> None:
    """The test error over the error of always answering the training mean, averaged over seeds.

    One seed's ratio is numerical noise across CPUs and thread counts: over seeds 0-7 it spread from 0.63 to
    0.88 with one thread and 0.66 to 0.79 with two (sd 0.07 pooled), and another CPU gave 0.88 for seed 0
    where this one gives 0.68. The mean of 4 seeds measured 0.707 to 0.731 (sd of such a mean about 0.035),
    so 0.85 leaves more than three of them and still says "clearly better than the mean".
    """
    scale = 10.0
    reg = replace(
        digits,
        task="regression",
        num_classes=1,
        target_scale=scale,
        train_y=(digits.train_y * scale).astype(np.float32),
        test_y=(digits.test_y * scale).astype(np.float32),
    )
    baseline = np.abs(reg.test_y - reg.train_y.mean()).mean()
    ratios = []
    for seed in range(REGRESSION_SEEDS):
        torch.manual_seed(seed)
        model = build_model(ARCH, 1, 1)
        events: list[ProgressEvent] = []
        fit(model, reg, None, epochs=8, lr=0.02, batch_size=32, seed=seed, progress=events.append)
        assert all(e.accuracy is None and np.isfinite(e.loss) for e in events)
        assert events[-1].loss < events[0].loss
        ratios.append(mae(model, reg, None, split="test") / baseline)
    assert np.mean(ratios) < 0.85, ratios


def test_crop_flip_takes_windows_of_the_reflect_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    flipped = 0
    for i in range(len(x)):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        plain = any(torch.equal(w, out[i].float()) for w in windows)
        mirrored = any(torch.equal(w.flip(-1), out[i].float()) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < len(x)
    assert torch.equal(crop_flip(x, 0, False, g), x)


def test_augmenter_is_absent_when_nothing_is_asked_and_autoaugment_keeps_uint8_batches() -> None:
    g = torch.Generator().manual_seed(0)
    assert build_augmenter(None, g) is None and build_augmenter(AugmentSpec(), g) is None
    x = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    aug = build_augmenter(AugmentSpec(crop_padding=4, flip=True, autoaugment="cifar10"), g)
    assert aug is not None
    out = aug(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="policy"):
        AutoAugment("mnist")


def test_training_with_the_full_augmentation_is_reproducible(digits: ArrayDataset) -> None:
    recipe = QUICK.model_copy(update={"augment": AugmentSpec(crop_padding=2, flip=True, autoaugment="svhn")})
    a, b = fresh(), fresh()
    train(a, digits, None, recipe, seed=5)
    train(b, digits, None, recipe, seed=5)
    assert same(weights(a), weights(b))


def test_normalizer_matches_the_data_set_statistics() -> None:
    norm = Normalizer((0.5, 0.25), (0.5, 0.25), torch.device("cpu"))
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 2, 1, 1).expand(1, 2, 1, 1)
    assert norm(x).flatten().tolist() == pytest.approx([-1.0, 3.0])


def test_the_gpu_settings_also_run_on_cpu_and_leave_contiguous_weights() -> None:
    rng = np.random.default_rng(0)
    rgb = ArrayDataset(
        "rgb",
        rng.integers(0, 256, (64, 3, 16, 16), dtype=np.uint8),
        rng.integers(0, 10, 64),
        rng.integers(0, 256, (8, 3, 16, 16), dtype=np.uint8),
        rng.integers(0, 10, 8),
        10,
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(ARCH, 10, 3)
        stats = fit(
            model,
            rgb,
            None,
            epochs=2,
            lr=0.01,
            batch_size=16,
            seed=0,
            fast=True,
            augment=AugmentSpec(crop_padding=2, flip=True, autoaugment="cifar10"),
        )
        assert np.isfinite(stats.loss)
        assert all(p.is_contiguous() for p in model.parameters())
        runs.append(weights(model))
    assert same(*runs)


def test_a_recipe_cut_to_fewer_epochs_scales_its_milestones_and_drops_those_out_of_range() -> None:
    study = STUDY_CIFAR10_RECIPE  # 100 epochs, milestones 35, 70, 90
    assert study.cut_to(10).milestones == [4, 7, 9]
    assert study.cut_to(5).milestones == [2, 4, 4]  # both late decays still happen, in the last epoch
    assert study.cut_to(1).milestones == []  # 0 would divide the rate before any training
    assert study.cut_to(10).model_dump(exclude={"epochs", "milestones"}) == study.model_dump(
        exclude={"epochs", "milestones"}
    )
    assert study.cut_to(10).epochs == 10 and study.epochs == 100


@pytest.mark.parametrize("side, channels_last", [(8, False), (16, True)])
def test_the_fast_path_lays_out_channels_last_only_for_images_16_pixels_a_side(side, channels_last) -> None:
    """On 8x8 images ResNet-18's last stage is 1x1, where inductor's CUDA graphs failed on channels_last
    weights (tests/gpu); there the weights stay contiguous during training, and wider images still get it."""
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        "rgb",
        rng.integers(0, 256, (32, 3, side, side), dtype=np.uint8),
        rng.integers(0, 10, 32),
        rng.integers(0, 256, (8, 3, side, side), dtype=np.uint8),
        rng.integers(0, 10, 8),
        10,
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )
    torch.manual_seed(0)
    model = build_model(ARCH, 10, 3)
    seen: list[bool] = []

    def progress(_event: ProgressEvent) -> None:
        convs = [p for p in model.parameters() if p.dim() == 4]
        seen.append(all(p.is_contiguous(memory_format=torch.channels_last) for p in convs))

    fit(model, data, None, epochs=1, lr=0.01, batch_size=16, seed=0, fast=True, progress=progress)
    assert seen and set(seen) == {channels_last}
    assert all(p.is_contiguous() for p in model.parameters())  # handed back plain either way
