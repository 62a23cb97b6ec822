"""Both estimators as models are subsampled from 4 to 80 per group, on the study's published logits.

For every approach of a folder in the study's layout (default: shared/golden/seed-cifar10, 80 + 80 models,
1000 forget samples; the baseline splits the 80 reference models into 40 + 40), for every group size m it
draws m reference and m unlearned models without replacement (--repeats times, seeded) and computes the
study's epsilon-hat (exact, with its ceiling) and the smooth estimator (exact LR test between the fitted
Gaussians). It prints one JSON line per (approach, m) with the median, min and max over repeats, a line per
approach comparing the ends, and two lines timing the bootstrap over models; the same lines go to
benchmarks/results/convergence.jsonl and the figure to benchmarks/results/convergence.png.

    python benchmarks/bench_convergence.py                       # all nine approaches: ~5 min on 2 busy cores
    python benchmarks/bench_convergence.py --approaches baseline,finetune --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml.metrics.epsilon import epsilon_ceiling, epsilon_from_statistics, hinge_statistic, json_number
from ml.metrics.resolution import bootstrap_models, epsilon_hat_smooth
from ml.metrics.seed_layout import list_approaches, load_approach

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO.parent / "shared" / "golden" / "seed-cifar10"
RESULTS = REPO / "benchmarks" / "results"
SIZES = (4, 6, 8, 12, 16, 24, 32, 40, 48, 64, 80)


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max over repeats (infinite values allowed, as "inf")."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    median = float(v[(v.size - 1) // 2]) if v.size % 2 else float((v[v.size // 2 - 1] + v[v.size // 2]) / 2)
    return {"median": json_number(median), "min": json_number(float(v[0])), "max": json_number(float(v[-1]))}


def subsample(
    ref: np.ndarray, unl: np.ndarray, m: int, repeats: int, seed: int
) -> list[tuple[float, float, bool]]:
    """(study, smooth, censored) for `repeats` draws of m models per group without replacement."""
    rng = np.random.default_rng(seed)
    draws = 1 if m == min(ref.shape[0], unl.shape[0]) == max(ref.shape[0], unl.shape[0]) else repeats
    out = []
    for _ in range(draws):
        r = ref[np.sort(rng.choice(ref.shape[0], m, replace=False))]
        u = unl[np.sort(rng.choice(unl.shape[0], m, replace=False))]
        exact = epsilon_from_statistics(r, u, curve_deltas=np.empty(0))
        out.append((exact.epsilon_hat, epsilon_hat_smooth(r, u), exact.censored))
    return out


def bootstrap_timing() -> list[dict[str, Any]]:
    """Wall and CPU seconds of the bootstrap over models: 8 + 8 models x 30 samples (B = 1000), 80 + 80 x 1000."""
    rng = np.random.default_rng(0)
    lines = []
    for models, samples in ((8, 30), (80, 1000)):
        ref, unl = rng.normal(size=(models, samples)), rng.normal(0.3, 1.2, size=(models, samples))
        start, cpu = time.perf_counter(), time.process_time()
        interval = bootstrap_models(ref, unl)
        lines.append(
            {
                "bench": "bootstrap_models",
                "models_per_group": models,
                "samples": samples,
                "n_boot": interval.n_boot,
                "seconds": round(time.perf_counter() - start, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3),
            }
        )
    return lines


def plot(lines: list[dict[str, Any]], path: Path) -> None:
    """One panel per approach: both estimators (median over repeats, min-max band) and the ceiling over m."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    def value(v: Any) -> float:
        return math.inf if v == "inf" else math.nan if v is None else float(v)

    approaches = list(dict.fromkeys(line["approach"] for line in lines))
    cols = 3
    rows = math.ceil(len(approaches) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, approaches, strict=False):
        mine = [line for line in lines if line["approach"] == name]
        m = np.array([line["m"] for line in mine])
        cap = 19.0  # above the smooth estimator's largest value (ln 0.95e8 = 18.4): infinities drawn here
        for key, colour, label in (("study", "C0", "study's epsilon-hat"), ("smooth", "C1", "smooth")):
            med = np.array([min(value(line[key]["median"]), cap) for line in mine])
            lo = np.array([min(value(line[key]["min"]), cap) for line in mine])
            hi = np.array([min(value(line[key]["max"]), cap) for line in mine])
            ax.plot(m, med, "o-", color=colour, label=label, ms=3)
            ax.fill_between(m, lo, hi, color=colour, alpha=0.2)
        ax.plot(m, [line["ceiling"] for line in mine], ":", color="grey", label="ceiling")
        ax.axhline(value(mine[-1]["study"]["median"]), color="C0", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks([t for t in (4, 8, 16, 32, 80) if t <= m.max()])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("models per group", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(approaches) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        "epsilon-hat (delta 0.05) as models are subsampled (median and range of draws); dashed: the study's "
        "figure at all models; infinite values drawn at 19",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed-dir", type=Path, default=GOLDEN)
    parser.add_argument("--approaches", default="", help="comma-separated names (default: every approach)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="models per group")
    parser.add_argument("--repeats", type=int, default=5, help="draws of models per size")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for convergence.jsonl and .png")
    args = parser.parse_args()
    if not args.seed_dir.is_dir():
        parser.error(f"--seed-dir: {args.seed_dir} is not a folder")
    names = [n for n in args.approaches.split(",") if n] or list_approaches(args.seed_dir)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = []

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        print(json.dumps(line), flush=True)

    for line in bootstrap_timing():
        emit(line)
    per_size = []
    for name in names:
        data = load_approach(args.seed_dir, name)
        ref = hinge_statistic(data.reference_logits, data.labels)
        unl = hinge_statistic(data.unlearned_logits, data.labels)
        available = min(ref.shape[0], unl.shape[0])
        mine = []
        for m in [s for s in sizes if s <= available]:
            runs = subsample(ref, unl, m, args.repeats, seed=m)
            line = {
                "bench": "convergence",
                "approach": name,
                "m": m,
                "draws": len(runs),
                "ceiling": epsilon_ceiling(m, m),
                "study": spread([r[0] for r in runs]),
                "smooth": spread([r[1] for r in runs]),
                "censored_draws": sum(r[2] for r in runs),
            }
            emit(line)
            mine.append(line)
        per_size += mine
        emit(
            {
                "bench": "convergence_ends",
                "approach": name,
                "models": [mine[0]["m"], mine[-1]["m"]],
                "study": [mine[0]["study"]["median"], mine[-1]["study"]["median"]],
                "smooth": [mine[0]["smooth"]["median"], mine[-1]["smooth"]["median"]],
            }
        )
    (args.out / "convergence.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    plot(per_size, args.out / "convergence.png")
    print(json.dumps({"bench": "convergence_files", "folder": str(args.out)}), flush=True)


if __name__ == "__main__":
    main()
