"""Each unlearning method does what it claims, returns a new model and leaves its input bit-identical."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ml.augment import Normalizer
from ml.data import ArrayDataset, load_dataset
from ml.errors import Cancelled
from ml.logits import accuracy, logits
from ml.methods import METHOD_SPECS, UnknownMethod, UnlearnData, registered, run_method
from ml.methods.params import FinetuneParams, PoisonParams, PruneComplexParams
from ml.methods.study import conv_activation_means, iter_convs, kernels_to_reset
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import ProgressEvent

ARCH = ArchSpec(width=8)
RECIPE = Recipe(epochs=8, batch_size=32, lr=0.05, schedule="cosine")


def subset(full: ArrayDataset, n_train: int, n_test: int) -> ArrayDataset:
    return replace(
        full,
        train_x=full.train_x[:n_train],
        train_y=full.train_y[:n_train],
        test_x=full.test_x[:n_test],
        test_y=full.test_y[:n_test],
    )


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, int]:
    """Entries that differ, per tensor that changed at all."""
    diff = {k: int((before[k] != after[k]).sum()) for k in before}
    return {k: n for k, n in diff.items() if n}


@pytest.fixture(scope="module")
def data(digits: ArrayDataset) -> UnlearnData:
    return UnlearnData(digits, np.arange(40), excluded_ids=np.arange(390, 400), recipe=RECIPE, arch=ARCH)


def test_retain_ids_exclude_forget_and_earlier_forgotten_ids(digits: ArrayDataset) -> None:
    data = UnlearnData(digits, np.array([3, 1]), excluded_ids=np.array([7]))
    assert len(data.retain_ids) == digits.n_train - 3
    assert not set(data.retain_ids) & {1, 3, 7}
    with pytest.raises(ValueError, match="overlap"):
        UnlearnData(digits, np.array([1, 7]), excluded_ids=np.array([7]))


def test_every_spec_has_one_implementation() -> None:
    assert set(registered()) == set(METHOD_SPECS)
    with pytest.raises(UnknownMethod, match="valid: activation_reset"):
        run_method("forget_everything", torch.nn.Linear(1, 1), None, {}, seed=0)  # type: ignore[arg-type]


def test_importing_the_methods_package_does_not_load_torch() -> None:
    code = "import sys, ml.methods, ml.methods.params; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(METHOD_SPECS))
def test_params_reject_unknown_fields(name: str) -> None:
    with pytest.raises(ValidationError):
        METHOD_SPECS[name].params.model_validate({"learning_rate_typo": 1})
    METHOD_SPECS[name].params.model_validate({})


@pytest.mark.parametrize("name", sorted(METHOD_SPECS))
def test_every_method_on_tiny_input_returns_a_new_finite_model_and_leaves_its_input_alone(name: str) -> None:
    tiny = subset(load_dataset("digits"), 60, 20)
    arch = ArchSpec(width=4)
    torch.manual_seed(0)
    model = build_model(arch, 10, 1)
    before = state(model)
    data = UnlearnData(
        tiny, np.arange(8), excluded_ids=np.array([59]), recipe=Recipe(epochs=1, batch_size=16), arch=arch
    )
    events: list[ProgressEvent] = []
    out = run_method(name, model, data, {}, seed=0, progress=events.append)
    assert out is not model and type(out) is type(model)
    assert {k: v.shape for k, v in out.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert not changed(before, state(model))
    assert np.isfinite(logits(out, tiny, None, split="test")).all()
    assert all(0 <= e.fraction <= 1 for e in events)
    if events:
        assert events[-1].fraction == pytest.approx(1.0)


def test_params_given_as_a_dict_with_an_unknown_field_are_rejected(
    trained: torch.nn.Module, data: UnlearnData
) -> None:
    with pytest.raises(ValidationError):
        run_method("finetune", trained, data, {"epoch": 3}, seed=0)


def test_params_of_another_method_are_refused(trained: torch.nn.Module, data: UnlearnData) -> None:
    with pytest.raises(TypeError, match="PoisonParams"):
        run_method("poison", trained, data, FinetuneParams(), seed=0)
    out = run_method("poison", trained, data, PoisonParams(epochs=1), seed=0)
    assert out is not trained


def test_none_returns_an_identical_copy(trained: torch.nn.Module, data: UnlearnData) -> None:
    out = run_method("none", trained, data, {}, seed=0)
    assert out is not trained and not changed(state(trained), state(out))


def test_same_seed_same_result(trained: torch.nn.Module, data: UnlearnData) -> None:
    params = {"epochs": 1}
    a = run_method("finetune", trained, data, params, seed=4)
    b = run_method("finetune", trained, data, params, seed=4)
    c = run_method("finetune", trained, data, params, seed=5)
    assert not changed(state(a), state(b))
    assert changed(state(a), state(c))


def test_retrain_never_sees_a_forget_or_excluded_id_nor_the_input_weights(digits: ArrayDataset) -> None:
    # Out-of-range labels make cross-entropy fail if training ever draws one of these samples.
    poisoned_y = digits.train_y.copy()
    forget, excluded = np.arange(0, 40), np.arange(390, 400)
    poisoned_y[forget] = 10**6
    poisoned_y[excluded] = -(10**6)
    data = UnlearnData(
        replace(digits, train_y=poisoned_y),
        forget,
        excluded_ids=excluded,
        recipe=Recipe(epochs=2, batch_size=32),
        arch=ArchSpec(width=4),
    )
    torch.manual_seed(1)
    one = build_model(data.arch, 10, 1)
    torch.manual_seed(2)
    other = build_model(data.arch, 10, 1)
    a = run_method("retrain", one, data, {}, seed=3)
    b = run_method("retrain", other, data, {}, seed=3)
    assert not changed(state(a), state(b))


def test_poisoning_lowers_forget_accuracy(trained: torch.nn.Module, data: UnlearnData) -> None:
    # The study's step counts assume thousands of forget samples; 40 need smaller batches to move at all.
    base = accuracy(trained, data.dataset, data.forget_ids)
    poisoned = run_method("poison", trained, data, {"epochs": 5, "lr": 0.01, "batch_size": 16}, seed=0)
    mixed = run_method("poison_full", trained, data, {"lr": 0.05, "batch_size": 32}, seed=0)
    assert base > 0.9
    assert accuracy(poisoned, data.dataset, data.forget_ids) < base - 0.2
    assert accuracy(mixed, data.dataset, data.forget_ids) < base - 0.1
    assert accuracy(mixed, data.dataset, data.retain_ids) > 0.85


def test_hybrid_reports_both_stages_across_the_whole_run(trained: torch.nn.Module, data: UnlearnData) -> None:
    events: list[ProgressEvent] = []
    run_method("hybrid", trained, data, {"epochs": 1}, seed=0, progress=events.append)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert events[0].stage == "poison" and events[-1].stage == "retain"
    assert events[0].fraction < 0.2  # 40 poisoned samples against 350 retained


def test_prune_reinitialises_30_percent_of_every_weight_tensor(
    trained: torch.nn.Module, data: UnlearnData
) -> None:
    before = state(trained)
    out = run_method("prune", trained, data, {"epochs": 0}, seed=0)
    diff = changed(before, state(out))
    compared = {k for k, v in before.items() if v.ndim >= 2}
    assert set(diff) == compared  # batch norm and biases untouched
    for name in compared:
        assert diff[name] == round(0.3 * before[name].numel()), name


def test_prune_last_layer_touches_only_the_final_layer(trained: torch.nn.Module, data: UnlearnData) -> None:
    before = state(trained)
    out = run_method("prune_last_layer", trained, data, {"epochs": 0, "quantile": 0.5}, seed=0)
    diff = changed(before, state(out))
    assert set(diff) == {"linear.weight"}
    assert diff["linear.weight"] == round(0.5 * before["linear.weight"].numel())


def test_prune_complex_resets_only_weights_low_in_both_comparisons(
    trained: torch.nn.Module, data: UnlearnData
) -> None:
    assert PruneComplexParams().retain_overfit_lr == pytest.approx(0.01 / 3)  # not the study's 0.01 // 3 == 0
    before = state(trained)
    out = run_method("prune_complex", trained, data, {"epochs": 0, "retain_fraction": 0.1}, seed=0)
    diff = changed(before, state(out))
    assert set(diff) <= {k for k, v in before.items() if v.ndim >= 2} and diff
    for name, n in diff.items():
        assert n <= round(0.3 * before[name].numel()), name


def test_repair_after_pruning_restores_retain_accuracy(trained: torch.nn.Module, data: UnlearnData) -> None:
    out = run_method("prune", trained, data, {"epochs": 3, "lr": 0.01, "batch_size": 32}, seed=0)
    assert accuracy(out, data.dataset, data.retain_ids) > 0.85


def test_activation_reset_resets_the_final_layer_and_only_kernels_passing_its_rule(
    digits: ArrayDataset, trained: torch.nn.Module
) -> None:
    # Retain as large as forget, so the method's retain sample is the whole retain set.
    small = subset(digits, 60, 10)
    data = UnlearnData(small, np.arange(30), arch=ARCH)
    before = state(trained)
    out = run_method("activation_reset", trained, data, {"epochs": 0}, seed=0)
    diff = changed(before, state(out))
    assert diff.pop("linear.weight") and diff.pop("linear.bias")
    forget = conv_activation_means(trained, small, data.forget_ids, torch.device("cpu"), 16)
    retain = conv_activation_means(trained, small, data.retain_ids, torch.device("cpu"), 16)
    rule = kernels_to_reset(forget, retain, 0.8)
    assert any(mask.any() for mask in rule.values()) and not all(mask.all() for mask in rule.values())
    for name, conv in iter_convs(out):
        old = before[f"{name}.weight"]
        reset = (conv.weight.detach() != old).flatten(1).any(1)
        assert torch.equal(reset, rule[name]), name
        diff.pop(f"{name}.weight", None)
    assert not diff  # nothing but conv kernels and the final layer changed


def test_activation_means_divide_by_the_number_of_samples(
    digits: ArrayDataset, trained: torch.nn.Module
) -> None:
    ids = np.arange(25)
    means = conv_activation_means(trained, digits, ids, torch.device("cpu"), 7)
    trained.eval()
    with torch.no_grad():
        x = Normalizer(digits.mean, digits.std, torch.device("cpu"))(torch.from_numpy(digits.train_x[ids]))
        expected = trained.conv1(x).mean(0)
    trained.train()
    torch.testing.assert_close(means["conv1"], expected, rtol=1e-4, atol=1e-5)


def test_a_stop_request_cancels_a_method_and_leaves_the_input_alone(
    trained: torch.nn.Module, data: UnlearnData
) -> None:
    before = state(trained)
    with pytest.raises(Cancelled):
        run_method("prune", trained, data, {}, seed=0, should_stop=lambda: True)
    assert not changed(before, state(trained))
