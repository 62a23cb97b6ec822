"""Logits: eval mode, float32, in order, batch-independent; accuracy and regression errors on top."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.augment import Normalizer
from ml.data import ArrayDataset, load_dataset
from ml.logits import accuracy, evaluate, logits, mae, predict
from ml.methods import UnlearnData
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import train


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    full = load_dataset("digits")
    return replace(
        full,
        train_x=full.train_x[:300],
        train_y=full.train_y[:300],
        test_x=full.test_x[:80],
        test_y=full.test_y[:80],
    )


@pytest.fixture(scope="module")
def model(digits: ArrayDataset) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(ArchSpec(width=4), 10, 1)
    train(net, digits, None, Recipe(epochs=3, batch_size=32, lr=0.05), seed=0)
    return net


def test_logits_are_float32_in_the_order_asked_and_match_a_plain_eval_forward(
    digits: ArrayDataset, model: torch.nn.Module
) -> None:
    ids = np.array([5, 0, 299, 5, 17])
    out = logits(model, digits, ids)
    assert out.dtype == np.float32 and out.shape == (5, 10)
    model.eval()
    with torch.no_grad():
        norm = Normalizer(digits.mean, digits.std, torch.device("cpu"))
        expected = model(norm(torch.from_numpy(digits.train_x[ids]))).numpy()
    model.train()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[3])


def test_logits_are_deterministic_batch_independent_and_restore_train_mode(
    digits: ArrayDataset, model: torch.nn.Module
) -> None:
    model.train()
    first = logits(model, digits, None, split="test")
    assert model.training
    np.testing.assert_array_equal(first, logits(model, digits, None, split="test"))
    np.testing.assert_allclose(
        first, logits(model, digits, None, split="test", batch_size=7), rtol=1e-5, atol=1e-5
    )
    assert first.shape == (digits.n_test, 10)


def test_no_ids_give_an_empty_array_and_bad_ids_fail(digits: ArrayDataset, model: torch.nn.Module) -> None:
    assert logits(model, digits, np.zeros(0, dtype=np.int64)).shape == (0, 10)
    with pytest.raises(ValueError):
        logits(model, digits, np.array([digits.n_test]), split="test")
    with pytest.raises(ValueError, match="split"):
        logits(model, digits, None, split="valid")  # type: ignore[arg-type]


def test_accuracy_is_the_share_of_argmax_hits(digits: ArrayDataset, model: torch.nn.Module) -> None:
    ids = np.arange(0, 300, 3)
    expected = np.mean(logits(model, digits, ids).argmax(1) == digits.train_y[ids])
    assert accuracy(model, digits, ids) == pytest.approx(expected)
    assert accuracy(model, digits, None, split="test") > 0.5
    with pytest.raises(ValueError):
        accuracy(model, digits, np.zeros(0, dtype=np.int64))


def test_evaluate_reports_retain_forget_and_test_accuracy(
    digits: ArrayDataset, model: torch.nn.Module
) -> None:
    data = UnlearnData(digits, np.arange(20), excluded_ids=np.arange(20, 30))
    report = evaluate(model, data)
    assert report == {
        "retain_accuracy": pytest.approx(accuracy(model, digits, np.arange(30, 300))),
        "forget_accuracy": pytest.approx(accuracy(model, digits, np.arange(20))),
        "test_accuracy": pytest.approx(accuracy(model, digits, None, split="test")),
    }


def test_regression_evaluates_mean_absolute_error_in_original_units(digits: ArrayDataset) -> None:
    scale = 4.0
    reg = replace(
        digits,
        task="regression",
        num_classes=1,
        target_scale=scale,
        train_y=digits.train_y.astype(np.float32) * 3,
        test_y=digits.test_y.astype(np.float32) * 3,
    )
    torch.manual_seed(0)
    net = build_model(ArchSpec(width=4), 1, 1)
    ids = np.arange(10)
    raw = logits(net, reg, ids)[:, 0]
    np.testing.assert_allclose(predict(net, reg, ids), raw * scale, rtol=1e-6)
    assert mae(net, reg, ids) == pytest.approx(np.mean(np.abs(raw * scale - reg.train_y[ids])), rel=1e-5)
    report = evaluate(net, UnlearnData(reg, np.arange(5)))
    assert report["retain_accuracy"] is None and report["forget_accuracy"] is None
    assert report["test_accuracy"] is None
    assert report["forget_mae"] == pytest.approx(mae(net, reg, np.arange(5)))
    assert report["test_mae"] == pytest.approx(mae(net, reg, None, split="test"))
    with pytest.raises(ValueError, match="regression"):
        accuracy(net, reg, ids)
