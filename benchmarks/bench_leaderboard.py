"""Every unlearning method scored against one reference set, in one table: the study's Table 1, run here.

One original model (ResNet-18, CIFAR form) trains on the whole training split; a seeded random forget set
is drawn; N reference models retrain from scratch on the retain set (seeds 0..N-1) and every method runs N
times on the original model with its default parameters (seeds 10000+i). Per method it prints one JSON
line: epsilon-hat (delta 0.05) with its resolution (epsilon_ceiling, n_at_ceiling, n_infinite, censored),
its bootstrap interval over models (epsilon_hat_ci95_models), the smooth estimate, the per-sample ci95 and
counts, the NeurIPS 2023 score (null below MIN_MODELS),
retain / forget / test accuracy (mean and 95% half-width over seeds), MIA-efficacy (SVC attack, retain vs
test, at most 2000 samples each), the mean KL of the reference group's forget-set predictions to the
method's, the measured wall time over the mean retrain's, and the compute budget ml.methods.cost assigns
(sample-passes over a retrain's). Runs are interleaved by seed (reference i, then every method's run i),
so a change in machine load while it runs touches every method alike. --markdown ends with a table sorted
by epsilon-hat. Nothing is written to disk.

    python benchmarks/bench_leaderboard.py --markdown      # digits, N=6: 14 min on 2 shared CPU cores
    python benchmarks/bench_leaderboard.py --dataset fashion_mnist --train-size 3000 --test-size 1000 \\
        --n-models 3 --epochs 6 --methods none,finetune,retrain,gradient_ascent,scrub,ssd --markdown  # 10 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from mlbench import sync, train_original

from ml.data import ArrayDataset, load_dataset
from ml.data.forget import random_forget_ids
from ml.logits import evaluate, logits
from ml.methods import METHOD_SPECS, UnlearnData, cost, run_method
from ml.metrics.divergence import mean_kl
from ml.metrics.epsilon import DEFAULT_DELTA, epsilon_hat, hinge_statistic
from ml.metrics.mia import mia_efficacy
from ml.metrics.neurips import MIN_MODELS, neurips_score
from ml.metrics.resolution import resolution
from ml.models import build_model
from ml.specs import ArchSpec, default_recipe
from ml.trainer import resolve_device, train

METHOD_SEED = 10000
"""Method run i uses seed 10000 + i, as evaluations do, so retrain never reproduces a reference model."""
ORIGINAL_SEED = 20000
"""The original model trains with 20000 + --seed, apart from both the reference and the method seeds."""
MIA_SAMPLES = 2000
"""Retain and test samples the membership attack trains on (each side, at most), as evaluations use."""
ACCURACIES = ("retain_accuracy", "forget_accuracy", "test_accuracy")


def subset(dataset: ArrayDataset, n_train: int, n_test: int, seed: int) -> ArrayDataset:
    """Seeded random rows of each split (0 = all), so large data sets fit a CPU's time."""
    rng = np.random.default_rng(seed)

    def rows(n: int, size: int) -> np.ndarray:
        return np.sort(rng.choice(n, size, replace=False)) if 0 < size < n else np.arange(n)

    tr, te = rows(dataset.n_train, n_train), rows(dataset.n_test, n_test)
    groups = None if dataset.train_groups is None else dataset.train_groups[tr]
    return replace(
        dataset,
        train_x=dataset.train_x[tr],
        train_y=dataset.train_y[tr],
        test_x=dataset.test_x[te],
        test_y=dataset.test_y[te],
        train_groups=groups,
    )


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, 95% half-width (1.96 std / sqrt(n)) and count, as evaluations report them."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "ci95": float(1.96 * arr.std() / math.sqrt(arr.size)),
        "n": int(arr.size),
    }


class Group:
    """One group of models (the references, or one method's runs): what each model gave on the shared sets."""

    def __init__(self) -> None:
        self.forget_logits: list[np.ndarray] = []
        self.metrics: dict[str, list[float]] = {k: [] for k in (*ACCURACIES, "mia_efficacy", "seconds")}

    def add(self, model: torch.nn.Module, seconds: float, data: UnlearnData, probe: Probe) -> None:
        """Score a trained model: accuracies, forget-set logits and MIA-efficacy (none of it timed)."""
        forget = logits(model, data.dataset, data.forget_ids, device=probe.device)
        self.forget_logits.append(forget)
        for key, value in evaluate(model, data, device=probe.device).items():
            if key in self.metrics:
                self.metrics[key].append(float(value))
        self.metrics["mia_efficacy"].append(probe.mia(model, forget))
        self.metrics["seconds"].append(seconds)

    def stacked(self) -> np.ndarray:
        return np.stack(self.forget_logits)


class Probe:
    """The fixed retain and test samples the membership attack learns from, drawn once for every model."""

    def __init__(self, data: UnlearnData, device: torch.device) -> None:
        rng = np.random.default_rng(0)
        self.data, self.device = data, device
        self.retain = np.sort(rng.permutation(data.retain_ids)[:MIA_SAMPLES])
        self.test = np.sort(rng.permutation(data.dataset.n_test)[:MIA_SAMPLES])

    def mia(self, model: torch.nn.Module, forget_logits: np.ndarray) -> float:
        """Share of forget samples the SVC attack (retain = member, test = non-member) calls non-members."""
        ds = self.data.dataset
        return mia_efficacy(
            logits(model, ds, self.retain, device=self.device),
            ds.train_y[self.retain],
            logits(model, ds, self.test, split="test", device=self.device),
            ds.test_y[self.test],
            forget_logits,
            ds.train_y[self.data.forget_ids],
        )


def retrain_reference(data: UnlearnData, seed: int, device: torch.device) -> tuple[torch.nn.Module, float]:
    """A model trained from scratch on the retain set, seeded as the service's reference runs are."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(data.arch, data.dataset.num_classes, data.dataset.in_channels)
    train(model, data.dataset, data.retain_ids, data.recipe, seed=seed, device=device)
    sync(device)
    return model, time.perf_counter() - start


def summarise(name: str, refs: Group, group: Group, data: UnlearnData, ref_seconds: float) -> dict[str, Any]:
    """One method's leaderboard line from its group and the reference group."""
    labels = data.dataset.train_y[data.forget_ids]
    ref_out, unl_out = refs.stacked(), group.stacked()
    eps = epsilon_hat(ref_out, unl_out, labels, delta=DEFAULT_DELTA)
    n = min(len(refs.forget_logits), len(group.forget_logits))
    neurips = (
        neurips_score(
            ref_out,
            unl_out,
            labels,
            reference_retain_accuracy=refs.metrics["retain_accuracy"],
            reference_test_accuracy=refs.metrics["test_accuracy"],
            unlearned_retain_accuracy=group.metrics["retain_accuracy"],
            unlearned_test_accuracy=group.metrics["test_accuracy"],
        ).to_json()
        if n >= MIN_MODELS
        else None
    )
    seconds = spread(group.metrics["seconds"])
    res = resolution(eps, hinge_statistic(ref_out, labels), hinge_statistic(unl_out, labels))
    return {
        "method": name,
        **eps.to_json(),
        **res.to_json(),
        "delta": DEFAULT_DELTA,
        "neurips": neurips,
        **{k: spread(group.metrics[k]) for k in (*ACCURACIES, "mia_efficacy")},
        "kl_to_reference": mean_kl(ref_out, unl_out),
        "seconds": seconds,
        "time_vs_retrain": seconds["mean"] / ref_seconds,
        "budget_vs_retrain": cost(name, {}, data),
    }


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _pm(s: dict[str, Any], digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def _order(line: dict[str, Any]) -> tuple[int, float, str]:
    """Finite epsilon-hats first, ascending, then infinite ones, then undefined ones (NaN is null in JSON)."""
    e = line["epsilon_hat"]
    if e is None:
        return 2, 0.0, line["method"]
    if e == "inf":
        return 1, 0.0, line["method"]
    return 0, float(e), line["method"]


def markdown(lines: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    """The leaderboard as a Markdown table sorted by epsilon-hat, with the reference group's own row last.

    Every epsilon-hat shows its bootstrap interval over models and its ceiling; a censored one is marked,
    since the true value may lie anywhere above it.
    """
    head = (
        "| method | epsilon-hat [95% over models] | ceiling | at ceiling / inf | smooth | NeurIPS | retain"
        " | forget | test | MIA | KL | time/retrain | budget/retrain |"
    )
    rows = [head, "|" + " --- |" * 13]
    for line in sorted(lines, key=_order):
        low, high = (_num(v) for v in line["epsilon_hat_ci95_models"])
        eps = _num(line["epsilon_hat"]) + (" (censored)" if line["censored"] else "")
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{line['method']}`",
                    f"{eps} [{low}, {high}]",
                    _num(line["epsilon_ceiling"]),
                    f"{line['n_at_ceiling']} / {line['n_infinite']} of {line['n_samples']}",
                    _num(line["epsilon_hat_smooth"]),
                    _num(None if line["neurips"] is None else line["neurips"]["score"]),
                    *(_pm(line[k]) for k in ACCURACIES),
                    _num(line["mia_efficacy"]["mean"]),
                    _num(line["kl_to_reference"]),
                    _num(line["time_vs_retrain"]),
                    _num(line["budget_vs_retrain"]),
                ]
            )
            + " |"
        )
    rows.append(
        "| *reference (retrained)* | – | – | – | – | – | "
        + " | ".join(_pm(reference[k]) for k in ACCURACIES)
        + f" | {_num(reference['mia_efficacy']['mean'])} | – | 1.000 | 1.000 |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None, help="data set folder, for data sets that need one")
    parser.add_argument("--n-models", type=int, default=6, help="reference models, and runs per method")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = standard)")
    parser.add_argument(
        "--epochs", type=int, default=8, help="the recipe's epochs (0: the data set's default recipe as is)"
    )
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument("--methods", default=",".join(METHOD_SPECS), help="comma-separated names")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="the forget set's draw and the original model's")
    parser.add_argument("--train-size", type=int, default=0, help="seeded random training rows (0 = all)")
    parser.add_argument("--test-size", type=int, default=0, help="seeded random test rows (0 = all)")
    parser.add_argument("--markdown", action="store_true", help="end with a Markdown table")
    args = parser.parse_args()
    names = [n for n in args.methods.split(",") if n]
    unknown = sorted(set(names) - set(METHOD_SPECS))
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: {', '.join(METHOD_SPECS)}")
    if args.n_models < 2:
        parser.error("--n-models must be at least 2: epsilon-hat fits a Gaussian to each group")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.root)
    if args.train_size or args.test_size:
        dataset = subset(dataset, args.train_size, args.test_size, args.seed)
    recipe = default_recipe(args.dataset)
    if args.epochs:
        recipe = recipe.cut_to(args.epochs)
    arch = ArchSpec(width=args.width)
    forget = random_forget_ids(dataset.n_train, fraction=args.forget_fraction, seed=args.seed)
    data = UnlearnData(dataset, forget, recipe=recipe, arch=arch)
    print(
        json.dumps(
            {
                "bench": "leaderboard",
                "dataset": args.dataset,
                "n_train": dataset.n_train,
                "n_test": dataset.n_test,
                "forget": len(forget),
                "retain": len(data.retain_ids),
                "arch": arch.model_dump(),
                "recipe": recipe.model_dump(),
                "n_models": args.n_models,
                "methods": names,
                "params": "each method's defaults",
                "threads": torch.get_num_threads(),
                "device": str(device),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "seed": args.seed,
            }
        ),
        flush=True,
    )

    original = train_original(data, ORIGINAL_SEED + args.seed, device)

    probe = Probe(data, device)
    refs = Group()
    groups = {name: Group() for name in names}
    for i in range(args.n_models):
        model, seconds = retrain_reference(data, i, device)
        refs.add(model, seconds, data, probe)
        for name in names:
            sync(device)
            start = time.perf_counter()
            out = run_method(name, original, data, {}, seed=METHOD_SEED + i, device=device)
            sync(device)
            groups[name].add(out, time.perf_counter() - start, data, probe)
        print(
            f"seed {i + 1}/{args.n_models} done, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    ref_seconds = spread(refs.metrics["seconds"])
    reference = {
        "reference": True,
        **{k: spread(refs.metrics[k]) for k in (*ACCURACIES, "mia_efficacy")},
        "seconds": ref_seconds,
    }
    print(json.dumps(reference), flush=True)
    lines = [summarise(name, refs, groups[name], data, ref_seconds["mean"]) for name in names]
    for line in lines:
        print(json.dumps(line), flush=True)
    print(json.dumps({"done": True, "wall_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    if args.markdown:
        print()
        print(markdown(lines, reference))


if __name__ == "__main__":
    main()
