"""A packed unlearning method (ml/methods/packed.py: K seeds in one pack) against K run_method calls.

Trains one original model (the data set's recipe, cut to --epochs), then per repeat times
run_packed(method, seeds=0..K-1) and the K calls run_method(method, seed=s) one after the other, in
alternating order (packed first on even repeats, separate first on odd ones) so that a drift of machine
load touches both sides alike. Prints one JSON line per repeat: {"bench": "packed_methods", "method", "k",
"repeat", "packed_wall_s", "packed_cpu_s", "separate_wall_s", "separate_cpu_s", "wall_ratio", "cpu_ratio",
"max_weight_diff", "load_before", "load_after"}: CPU seconds are the process's (user + system, all
threads), less sensitive to other processes on the machine than wall time; ratios are separate over packed;
max_weight_diff is the largest difference between network k of the pack and the separate run with seed k,
over every weight and BatchNorm statistic (float rounding only).

    python benchmarks/bench_packed_methods.py                     # neggrad_plus, digits width 8, K = 8, 1 thread
    python benchmarks/bench_packed_methods.py --method finetune --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from mlbench import prepare_process, sync, train_original

from ml.data import load_dataset
from ml.methods import UnlearnData, run_method
from ml.methods.packed import run_packed
from ml.specs import ArchSpec, default_recipe
from ml.trainer import resolve_device


def weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa if "num_batches" not in k)


def timed(fn):  # type: ignore[no-untyped-def]
    """fn()'s result, wall seconds and process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="neggrad_plus")
    parser.add_argument("--params", default="{}", help="the method's params, JSON")
    parser.add_argument("--k", type=int, default=8, help="seeds, all in one pack")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 width")
    parser.add_argument("--epochs", type=int, default=4, help="the original model's recipe cut to this many")
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    process = prepare_process(args.threads)  # as a worker's pool process is set up
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset)
    recipe = default_recipe(args.dataset).cut_to(args.epochs)
    rng = np.random.default_rng(0)
    forget = np.sort(
        rng.choice(dataset.n_train, round(args.forget_fraction * dataset.n_train), replace=False)
    )
    data = UnlearnData(dataset, forget, recipe=recipe, arch=ArchSpec(width=args.width))
    params = json.loads(args.params)
    model = train_original(data, 0, device, bench="packed_methods")
    seeds = list(range(args.k))

    def packed() -> list[torch.nn.Module]:
        out = run_packed(args.method, model, data, params, seeds=seeds, device=device, pack_size=args.k)
        sync(device)
        return out

    def separate() -> list[torch.nn.Module]:
        out = [run_method(args.method, model, data, params, seed=s, device=device) for s in seeds]
        sync(device)
        return out

    for repeat in range(args.repeats):
        load_before = os.getloadavg()[0]
        if repeat % 2 == 0:
            pack, p_wall, p_cpu = timed(packed)
            alone, s_wall, s_cpu = timed(separate)
        else:
            alone, s_wall, s_cpu = timed(separate)
            pack, p_wall, p_cpu = timed(packed)
        record = {
            "bench": "packed_methods",
            "method": args.method,
            "params": params,
            "k": args.k,
            "dataset": args.dataset,
            "n_train": dataset.n_train,
            "forget": len(forget),
            "width": args.width,
            **process,
            "device": str(device),
            "repeat": repeat,
            "order": "packed first" if repeat % 2 == 0 else "separate first",
            "packed_wall_s": round(p_wall, 2),
            "packed_cpu_s": round(p_cpu, 2),
            "separate_wall_s": round(s_wall, 2),
            "separate_cpu_s": round(s_cpu, 2),
            "wall_ratio": round(s_wall / p_wall, 2),
            "cpu_ratio": round(s_cpu / p_cpu, 2),
            "max_weight_diff": max(weight_diff(a, b) for a, b in zip(alone, pack, strict=True)),
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
