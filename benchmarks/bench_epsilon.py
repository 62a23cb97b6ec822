"""Time the loop reference and the vectorised epsilon-hat on the study's published logits; print one JSON line.

Both start from the same logits and end at per-sample epsilons (which must agree exactly); the vectorised
run also computes the 100-point curve over delta, and is timed without it too. Thread pools are pinned to
one thread before NumPy loads, so the numbers are per core.

    .venv/bin/python benchmarks/bench_epsilon.py [--seed-dir DIR] [--approach finetune] [--repeats 7]
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
for _variable in THREAD_VARIABLES:
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ml.metrics.epsilon import epsilon_hat  # noqa: E402
from ml.metrics.seed_layout import load_approach  # noqa: E402
from tests.epsilon_reference import hinge_loop, per_sample_epsilons_loop  # noqa: E402

TARGET_SPEEDUP = 300.0
TARGET_SECONDS = 0.1


def main() -> None:
    """Parse arguments, run both versions once (the loop) or several times (ours), print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-dir", type=Path, default=REPO.parent / "shared" / "golden" / "seed-cifar10")
    parser.add_argument("--approach", default="finetune")
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    data = load_approach(args.seed_dir, args.approach)
    ref, unl, labels = data.reference_logits, data.unlearned_logits, data.labels

    start = time.perf_counter()
    loop_eps = per_sample_epsilons_loop(hinge_loop(ref, labels), hinge_loop(unl, labels), args.delta)
    loop_seconds = time.perf_counter() - start

    with_curve, without_curve = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = epsilon_hat(ref, unl, labels, delta=args.delta)
        with_curve.append(time.perf_counter() - start)
        start = time.perf_counter()
        epsilon_hat(ref, unl, labels, delta=args.delta, curve_deltas=np.empty(0))
        without_curve.append(time.perf_counter() - start)

    ours = min(with_curve)
    record = {
        "benchmark": "epsilon_hat",
        "approach": args.approach,
        "n_samples": result.n_samples,
        "n_reference": result.n_reference,
        "n_unlearned": result.n_unlearned,
        "n_classes": int(ref.shape[2]),
        "delta": args.delta,
        "curve_points": int(result.deltas.size),
        "threads": {v: os.environ[v] for v in THREAD_VARIABLES},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "repeats": args.repeats,
        "loop_s": round(loop_seconds, 4),
        "vectorised_s": round(ours, 5),
        "vectorised_median_s": round(statistics.median(with_curve), 5),
        "vectorised_without_curve_s": round(min(without_curve), 5),
        "speedup": round(loop_seconds / ours, 1),
        "epsilon_hat": result.epsilon_hat,
        "identical_per_sample": bool(np.array_equal(loop_eps, result.per_sample, equal_nan=True)),
        "meets_target": bool(loop_seconds / ours >= TARGET_SPEEDUP and ours < TARGET_SECONDS),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
