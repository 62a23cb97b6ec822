"""Progress goes by the clock: a slow step never leaves a job page standing still for many steps."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ml.data import ArrayDataset, load_dataset
from ml.models import build_model
from ml.specs import ArchSpec
from ml.trainer import ProgressEvent, fit


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    full = load_dataset("digits")
    return replace(full, train_x=full.train_x[:60], train_y=full.train_y[:60])


def _steps(digits: ArrayDataset, **kwargs: float) -> list[int]:
    torch.manual_seed(0)
    events: list[ProgressEvent] = []
    fit(
        build_model(ArchSpec(width=4), 10, 1),
        digits,
        None,
        epochs=2,
        lr=0.01,
        batch_size=10,
        seed=0,
        progress=events.append,
        **kwargs,
    )
    return [e.step for e in events]


def test_a_zero_interval_reports_every_step(digits: ArrayDataset) -> None:
    assert _steps(digits, report_seconds=0.0) == list(range(1, 13))


def test_a_long_interval_reports_only_at_each_epochs_end(digits: ArrayDataset) -> None:
    # 25 steps used to be the only rule; now 12 steps report nothing but the two epoch ends.
    assert _steps(digits, report_seconds=3600.0) == [6, 12]
