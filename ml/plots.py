"""PNG figures of forget quality for reports and the service: epsilon-hat over delta, and per-sample histograms.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so they need no display and
no global state and can be drawn from worker threads. Every *_png function returns the PNG bytes (what the
service serves) and also writes them to `path` when one is given.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ml.metrics.epsilon import EpsilonResult

DPI = 100


def figure_png(figure: Figure, path: Path | None = None) -> bytes:
    """Render a figure to PNG bytes, also written to `path` when given."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def epsilon_curve_figure(results: Mapping[str, EpsilonResult], *, title: str | None = None) -> Figure:
    """epsilon-hat against delta, one line per named result, with each result's own delta marked.

    Infinite epsilon-hat values (more than half the defined samples perfectly separable) cannot be drawn:
    those points are left out and the legend says so.
    """
    if not results:
        raise ValueError("no results to plot")
    figure = Figure(figsize=(10, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for name, result in results.items():
        curve = np.where(np.isfinite(result.curve), result.curve, np.nan)
        label = f"{name}: {_format(result.epsilon_hat)} at delta {result.delta:g}"
        if np.isposinf(result.curve).any():
            label += " (inf at some deltas, not drawn)"
        (line,) = ax.plot(result.deltas, curve, label=label)
        if np.isfinite(result.epsilon_hat):
            ax.plot([result.delta], [result.epsilon_hat], "o", color=line.get_color())
    ax.set_xlabel("delta")
    ax.set_ylabel("epsilon-hat (median over forget samples)")
    ax.set_title(title or "Forget quality: epsilon-hat over delta (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    return figure


def epsilon_curve_png(
    results: Mapping[str, EpsilonResult], path: Path | None = None, *, title: str | None = None
) -> bytes:
    """PNG of epsilon_curve_figure, also written to `path` when given."""
    return figure_png(epsilon_curve_figure(results, title=title), path)


def statistic_histograms_figure(
    reference: np.ndarray,
    unlearned: np.ndarray,
    *,
    samples: Sequence[int] | None = None,
    columns: int = 3,
    bins: int = 20,
    statistic: str = "hinge",
) -> Figure:
    """Grid of per-sample histograms of the reference [M_r, n] and unlearned [M_u, n] statistics.

    By default the first nine samples, as in the study's own look at its data.
    """
    ref, unl = np.asarray(reference, dtype=np.float64), np.asarray(unlearned, dtype=np.float64)
    if ref.ndim != 2 or unl.ndim != 2 or ref.shape[1] != unl.shape[1]:
        raise ValueError(
            f"statistics must be [models, samples] with the same samples, got {ref.shape}, {unl.shape}"
        )
    chosen = list(range(min(9, ref.shape[1]))) if samples is None else [int(s) for s in samples]
    if not chosen or min(chosen) < 0 or max(chosen) >= ref.shape[1]:
        raise ValueError(f"samples must be indices in [0, {ref.shape[1]})")
    columns = max(1, min(columns, len(chosen)))
    rows = -(-len(chosen) // columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, sample in zip(axes.flat, chosen, strict=False):
        edges = np.histogram_bin_edges(np.concatenate([ref[:, sample], unl[:, sample]]), bins=bins)
        ax.hist(ref[:, sample], bins=edges, alpha=0.5, label=f"reference ({ref.shape[0]})")
        ax.hist(unl[:, sample], bins=edges, alpha=0.5, label=f"unlearned ({unl.shape[0]})")
        ax.set_title(f"sample {sample}", fontsize="small")
        ax.tick_params(labelsize="x-small")
    for ax in axes.flat[len(chosen) :]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize="x-small")
    figure.suptitle(f"Per-sample {statistic} of reference and unlearned models")
    figure.tight_layout()
    return figure


def statistic_histograms_png(
    reference: np.ndarray,
    unlearned: np.ndarray,
    path: Path | None = None,
    *,
    samples: Sequence[int] | None = None,
    columns: int = 3,
    bins: int = 20,
    statistic: str = "hinge",
) -> bytes:
    """PNG of statistic_histograms_figure, also written to `path` when given."""
    figure = statistic_histograms_figure(
        reference, unlearned, samples=samples, columns=columns, bins=bins, statistic=statistic
    )
    return figure_png(figure, path)


def _format(value: float) -> str:
    """A number for a legend: three decimals, or inf/nan."""
    return f"{value:.3f}" if np.isfinite(value) else str(value)
