"""Wall time of every unlearning method as a share of retrain's, the study's cost budget (at most 5%).

Prints JSON lines: the setup, the original model's training, then per method its seconds, its ratio to
retrain's seconds and its retain / forget / test accuracy. Retrain uses the data set's recipe, so the
ratios only match the study's budget with the study's recipe (100 epochs): the CPU default (digits,
15 epochs, width 8) makes every ratio about 100/15 times larger than the study's setup would.

    python benchmarks/bench_methods.py                                    # CPU, ~2 minutes
    python benchmarks/bench_methods.py --dataset cifar10 --root DIR --width 64 --device cuda
    python benchmarks/bench_methods.py --synthetic 50000 --width 64 --device cuda   # random 32x32x3 data
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from mlbench import sync, synthetic, train_original

from ml.data import load_dataset
from ml.logits import evaluate
from ml.methods import METHOD_SPECS, UnlearnData, run_method
from ml.specs import STUDY_CIFAR10_RECIPE, ArchSpec, default_recipe
from ml.trainer import resolve_device

BUDGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None, help="data set folder, for data sets that need one")
    parser.add_argument("--synthetic", type=int, default=0, help="use N random 32x32x3 images instead")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = standard)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--epochs", type=int, default=None, help="override the recipe's epochs (retrain's cost)"
    )
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument("--methods", default=",".join(sorted(METHOD_SPECS)), help="comma-separated names")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.synthetic:
        dataset, recipe = synthetic(args.synthetic, args.seed), STUDY_CIFAR10_RECIPE.model_copy(deep=True)
    else:
        dataset, recipe = load_dataset(args.dataset, args.root), default_recipe(args.dataset)
    if args.epochs:
        recipe = recipe.cut_to(args.epochs)
    arch = ArchSpec(width=args.width)
    rng = np.random.default_rng(args.seed)
    forget = np.sort(
        rng.choice(dataset.n_train, round(args.forget_fraction * dataset.n_train), replace=False)
    )
    data = UnlearnData(dataset, forget, recipe=recipe, arch=arch)
    setup = {
        "bench": "methods",
        "dataset": dataset.name,
        "n_train": dataset.n_train,
        "forget": len(forget),
        "width": args.width,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "recipe_epochs": recipe.epochs,
        "batch": recipe.batch_size,
        "budget": BUDGET,
    }
    print(json.dumps(setup), flush=True)

    model = train_original(data, args.seed, device, bench="methods")

    names = args.methods.split(",")
    names.sort(key=lambda name: name != "retrain")  # retrain first: every ratio divides by it
    retrain_seconds = None
    for name in names:
        sync(device)
        start = time.perf_counter()
        out = run_method(name, model, data, {}, seed=args.seed, device=device)
        sync(device)
        seconds = time.perf_counter() - start
        if name == "retrain":
            retrain_seconds = seconds
        ratio = seconds / retrain_seconds if retrain_seconds else None
        print(
            json.dumps(
                {
                    "method": name,
                    "seconds": round(seconds, 2),
                    "ratio_to_retrain": None if ratio is None else round(ratio, 4),
                    "within_budget": None if ratio is None else ratio <= BUDGET,
                    **evaluate(out, data, device=device),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
