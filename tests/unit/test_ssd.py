"""SSD keeps a useful model at its defaults on the set-up where it used to wreck one (tests/gpu/test_cuda.py's:
digits, width 16, 3 epochs at lr 0.05), with seeds and forget sets found by benchmarks/bench_ssd.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ml.data import ArrayDataset, load_dataset
from ml.data.forget import class_forget_ids, random_forget_ids
from ml.logits import accuracy
from ml.methods import UnlearnData, run_method
from ml.methods.base import Run
from ml.methods.params import SSDParams
from ml.methods.ssd import guarded_dampen, retain_check_ids
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import fit
from tests.unit.test_methods import changed, state

ARCH = ArchSpec(width=16)
RECIPE = Recipe(epochs=3, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_dataset("digits")


def original(data: ArrayDataset, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ARCH, data.num_classes, data.in_channels)
    fit(model, data, None, epochs=3, lr=0.05, batch_size=64, seed=seed, device="cpu")
    return model


@pytest.fixture(scope="module")
def seed3(digits: ArrayDataset) -> torch.nn.Module:
    return original(digits, 3)


def test_a_forget_set_just_over_a_batch_is_weighed_in_even_batches(
    digits: ArrayDataset, seed3: torch.nn.Module
) -> None:
    """144 forget samples in batches of 128 and 16 made the 16's gradient noise look like importance: the
    paper's rule (unguarded) left test accuracy 0.479 of 0.961 at seed 3. In two batches of 72 it keeps it."""
    model = seed3
    data = UnlearnData(digits, np.arange(0, digits.n_train, 10), recipe=RECIPE, arch=ARCH)
    before = accuracy(model, digits, None, split="test")
    out = run_method("ssd", model, data, {"max_retain_drop": None}, seed=0)
    assert accuracy(out, digits, None, split="test") > before - 0.02


def test_the_guard_backs_off_where_the_rule_itself_wrecks_the_model(digits: ArrayDataset) -> None:
    """29 forget samples, one batch, at seed 4: the unguarded rule dampens up to 5% of a layer and test
    accuracy falls from 0.916 to 0.783; the guard doubles alpha once and keeps it."""
    model = original(digits, 4)
    forget = random_forget_ids(digits.n_train, fraction=0.02, seed=4)
    data = UnlearnData(digits, forget, recipe=RECIPE, arch=ARCH)
    before = accuracy(model, digits, None, split="test")
    unguarded = run_method("ssd", model, data, {"max_retain_drop": None}, seed=0)
    assert accuracy(unguarded, digits, None, split="test") < before - 0.1  # the failure the guard is for
    details: dict = {}
    guarded = run_method("ssd", model, data, {}, seed=0, details=details)
    assert accuracy(guarded, digits, None, split="test") > before - 0.02
    assert changed(state(model), state(guarded))  # it still dampens, at a smaller reach
    assert details == {"alpha": 20.0}  # recorded for the model's metrics: doubled once
    p = SSDParams()
    check = retain_check_ids(data.retain_ids, p.retain_check)
    assert p.max_retain_drop is not None
    assert accuracy(guarded, digits, check) >= accuracy(model, digits, check) - p.max_retain_drop


def test_the_guard_lets_a_whole_class_be_forgotten(digits: ArrayDataset) -> None:
    """At seed 2 the rule forgets class 3 at alpha 10 (forget accuracy 0.82 to 0.91 before, 0 after) on one
    thread and on two.
    What it costs the guard's retain rows depends on the trained model's last bits, which change with the CPU
    and the thread count (0 on one thread of an AMD EPYC, 0.10 on two; at seed 0 the rule forgot nothing on
    two): so the tolerance is set around the cost measured here. Just above it the guard applies alpha 10 as
    the rule does; just below it the guard backs off. With no tolerance at all it keeps every retain row it
    checks as it was, doubling alpha or giving up, and the metrics' method_details say which alpha it applied."""
    model = original(digits, 2)
    data = UnlearnData(digits, class_forget_ids(digits.train_y, 3), recipe=RECIPE, arch=ARCH)
    # The model knows the class before: 0.91 at seed 2 on an AMD EPYC, 0.818 on one thread of an Intel Xeon
    # (seeds 0 to 7 there: 0.818 to 1.0 on one thread, 0.909 to 1.0 on two); chance is 0.1.
    assert accuracy(model, digits, data.forget_ids) > 0.7
    check = retain_check_ids(data.retain_ids, SSDParams().retain_check)
    before = accuracy(model, digits, check)
    rule = run_method("ssd", model, data, {"max_retain_drop": None}, seed=0)
    assert accuracy(rule, digits, data.forget_ids) < 0.05
    cost = before - accuracy(rule, digits, check)
    details: dict = {}
    out = run_method("ssd", model, data, {"max_retain_drop": max(cost, 0.0) + 0.01}, seed=0, details=details)
    assert details == {"alpha": 10.0} and not changed(state(rule), state(out))
    if cost > 0.01:  # a cost the guard can refuse: below it, the guard does
        refused: dict = {}
        run_method("ssd", model, data, {"max_retain_drop": cost - 0.01}, seed=0, details=refused)
        assert refused["alpha"] != 10.0
    strict_details: dict = {}
    strict = run_method("ssd", model, data, {"max_retain_drop": 0.0}, seed=0, details=strict_details)
    alpha = strict_details["alpha"]
    assert alpha is None or alpha in (10.0, 20.0, 40.0, 80.0, 160.0)
    assert accuracy(strict, digits, check) >= before
    # The recorded alpha is the one applied: the rule unguarded at that alpha gives the same weights. (On an
    # AMD EPYC the guard settled on 20, where the rule selects no weight at all, so "changed" is no test.)
    expected = (
        model
        if alpha is None
        else run_method("ssd", model, data, {"alpha": alpha, "max_retain_drop": None}, seed=0)
    )
    assert not changed(state(expected), state(strict))


def test_the_guard_leaves_the_weights_as_they_came_when_no_reach_passes(
    digits: ArrayDataset, seed3: torch.nn.Module
) -> None:
    """Importances that select every weight and scale it near zero fail the check at every alpha."""
    model = copy.deepcopy(seed3)
    data = UnlearnData(digits, np.arange(0, digits.n_train, 10), recipe=RECIPE, arch=ARCH)
    weights = [p for p in model.parameters() if p.requires_grad]
    before = state(model)
    full = [torch.full_like(p, 1e-6) for p in weights]
    forget = [torch.ones_like(p) for p in weights]
    alpha = guarded_dampen(model, data, full, forget, SSDParams(), Run(seed=0, device=torch.device("cpu")))
    assert alpha is None and not changed(before, state(model))
    alpha = guarded_dampen(
        model, data, full, forget, SSDParams(max_retain_drop=1.0), Run(seed=0, device=torch.device("cpu"))
    )
    assert alpha == 10.0 and changed(before, state(model))  # a tolerance of 1 accepts the first try


def test_the_guards_retain_rows_are_evenly_spaced_and_all_when_few() -> None:
    ids = np.arange(100, 200)
    np.testing.assert_array_equal(retain_check_ids(ids, 5), [100, 125, 150, 174, 199])
    np.testing.assert_array_equal(retain_check_ids(ids[:3], 5), ids[:3])
