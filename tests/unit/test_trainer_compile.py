"""fit's torch.compile switch: same training as eager, plain state_dict keys, eager fallback, worker default.

The "eager" backend traces with dynamo but runs the captured graph with PyTorch's own kernels, so it needs
no C++ toolchain and gives eager's numbers; inductor is what the worker uses on CUDA.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.data import ArrayDataset, load_dataset
from ml.methods import UnlearnData, run_method
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import (
    CUDA_COMPILE_MODE,
    TrainStats,
    compile_by_default,
    compile_default,
    compile_mode,
    fit,
    train,
)
from worker.context import JobContext
from worker.runner import use_compile

ARCH = ArchSpec(width=4)


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    """200 rows: six batches of 32 and a last one of 8, so a second batch shape is compiled too."""
    full = load_dataset("digits")
    return replace(full, train_x=full.train_x[:200], train_y=full.train_y[:200])


def fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ARCH, 10, 1)


def trained(data: ArrayDataset, **kwargs: object) -> tuple[torch.nn.Module, TrainStats]:
    model = fresh()
    stats = fit(model, data, None, epochs=2, lr=0.05, batch_size=32, seed=3, **kwargs)
    return model, stats


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def eager(digits: ArrayDataset) -> tuple[torch.nn.Module, TrainStats]:
    return trained(digits)


def test_compiled_fit_trains_the_callers_model_as_eager_does(digits, eager) -> None:
    reference, reference_stats = eager
    model, stats = trained(digits, compile_model=True, compile_backend="eager")
    assert stats.compiled and not reference_stats.compiled
    assert type(model) is type(reference)
    assert not any(key.startswith("_orig_mod") for key in model.state_dict())
    assert_same_weights(model, reference)
    assert stats.steps == reference_stats.steps == 14 and stats.samples == 400
    assert stats.loss == pytest.approx(reference_stats.loss, rel=1e-5)
    assert stats.accuracy == reference_stats.accuracy


def test_an_unknown_backend_trains_eagerly_with_a_warning(digits, eager, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ml.trainer"):
        model, stats = trained(digits, compile_model=True, compile_backend="no-such-backend")
    assert not stats.compiled and stats.steps == 14
    assert_same_weights(model, eager[0])
    assert "torch.compile unavailable" in caplog.text and "no-such-backend" in caplog.text


def test_a_backend_failing_at_the_first_step_falls_back_and_training_is_unchanged(
    digits, eager, caplog
) -> None:
    """As inductor without a C++ compiler: torch.compile accepts the model, the first call fails."""
    calls = []

    def no_compiler(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        calls.append(graph)
        raise RuntimeError("no C++ compiler found")

    with caplog.at_level(logging.WARNING, logger="ml.trainer"):
        model, stats = trained(digits, compile_model=True, compile_backend=no_compiler)
    assert len(calls) == 1  # after the failure the run no longer tries to compile
    assert not stats.compiled and stats.steps == 14
    assert_same_weights(model, eager[0])
    assert "torch.compile failed, training eagerly" in caplog.text
    assert "no C++ compiler found" in caplog.text


def test_compile_by_default_reaches_fit_train_and_methods_until_the_block_ends(digits) -> None:
    assert not compile_default().enabled
    with compile_by_default(backend="eager"):
        assert compile_default().enabled and compile_default().backend == "eager"
        assert trained(digits)[1].compiled
        assert not trained(digits, compile_model=False)[1].compiled
        recipe = Recipe(epochs=1, batch_size=32, lr=0.05)
        assert train(fresh(), digits, None, recipe, seed=0).compiled
    assert not compile_default().enabled
    assert not trained(digits)[1].compiled


def test_a_method_trains_the_same_under_compile_by_default(digits) -> None:
    """l1_sparse: a forward pre-hook counts steps and gradient hooks add its penalty, through the wrapper."""
    data = UnlearnData(digits, np.arange(20), recipe=Recipe(epochs=1, batch_size=32), arch=ARCH)
    params = {"epochs": 2, "batch_size": 32}
    plain = run_method("l1_sparse", fresh(), data, params, seed=1)
    with compile_by_default(backend="eager"):
        compiled = run_method("l1_sparse", fresh(), data, params, seed=1)
    assert_same_weights(compiled, plain)


def test_the_worker_compiles_on_cuda_only_when_the_setting_asks() -> None:
    assert use_compile(True, "cuda") and use_compile(True, "cuda:1")
    assert not use_compile(True, "cpu") and not use_compile(False, "cuda")


def test_a_job_context_sets_the_default_for_its_job_only() -> None:
    with JobContext("job-1", "train", {}, "cuda", torch_compile=True):
        assert compile_default().enabled and compile_default().backend == "inductor"
    assert not compile_default().enabled
    with JobContext("job-2", "train", {}, "cpu"):
        assert not compile_default().enabled


def test_inductor_on_cuda_compiles_to_cuda_graphs_and_nothing_else_does() -> None:
    assert CUDA_COMPILE_MODE == "reduce-overhead"
    assert compile_mode("inductor", torch.device("cuda", 0)) == CUDA_COMPILE_MODE
    assert compile_mode("inductor", torch.device("cpu")) is None
    assert compile_mode("eager", torch.device("cuda", 0)) is None
