"""Figures: the drawn data equals the results, PNG bytes are returned and written, sizes are as set."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ml.metrics.epsilon import epsilon_from_statistics
from ml.plots import (
    epsilon_curve_figure,
    epsilon_curve_png,
    statistic_histograms_figure,
    statistic_histograms_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG header."""
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


def test_curve_draws_each_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    near = epsilon_from_statistics(rng.normal(size=(10, 50)), rng.normal(size=(10, 50)))
    far = epsilon_from_statistics(rng.normal(size=(10, 50)), rng.normal(1.0, 1.0, size=(10, 50)))
    figure = epsilon_curve_figure({"near": near, "far": far})
    lines = figure.axes[0].get_lines()
    assert len(lines) == 4  # a curve and a marker at delta 0.05 for each
    np.testing.assert_array_equal(lines[0].get_xdata(), near.deltas)
    np.testing.assert_array_equal(lines[0].get_ydata(), near.curve)
    np.testing.assert_array_equal(lines[1].get_ydata(), [near.epsilon_hat])
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == [
        f"near: {near.epsilon_hat:.3f} at delta 0.05",
        f"far: {far.epsilon_hat:.3f} at delta 0.05",
    ]
    path = tmp_path / "curve.png"
    data = epsilon_curve_png({"near": near}, path)
    assert path.read_bytes() == data
    assert png_size(data) == (1000, 450)


def test_infinite_curve_is_not_drawn() -> None:
    separable = epsilon_from_statistics(np.zeros((4, 3)), np.ones((4, 3)))
    figure = epsilon_curve_figure({"separable": separable})
    lines = figure.axes[0].get_lines()
    assert len(lines) == 1
    assert np.isnan(lines[0].get_ydata()).all()
    assert "inf at some deltas" in figure.axes[0].get_legend().get_texts()[0].get_text()


def test_histograms_count_every_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref, unl = rng.normal(size=(30, 10)), rng.normal(size=(20, 10))
    figure = statistic_histograms_figure(ref, unl, samples=[0, 2, 4, 9], columns=3, bins=10)
    assert len(figure.axes) == 6
    visible = [ax for ax in figure.axes if ax.axison]
    assert [ax.get_title() for ax in visible] == ["sample 0", "sample 2", "sample 4", "sample 9"]
    for ax in visible:
        heights = [sum(bar.get_height() for bar in container) for container in ax.containers]
        assert heights == [30, 20]
    path = tmp_path / "hist.png"
    data = statistic_histograms_png(ref, unl, path, samples=[0, 2, 4, 9], columns=3)
    assert path.read_bytes() == data
    assert png_size(data) == (960, 520)
    assert png_size(statistic_histograms_png(ref, unl)) == (960, 780)


def test_bad_plot_inputs() -> None:
    with pytest.raises(ValueError, match="no results"):
        epsilon_curve_figure({})
    with pytest.raises(ValueError, match="samples must be indices"):
        statistic_histograms_figure(np.zeros((3, 4)), np.zeros((3, 4)), samples=[4])
    with pytest.raises(ValueError, match="same samples"):
        statistic_histograms_figure(np.zeros((3, 4)), np.zeros((3, 5)))
