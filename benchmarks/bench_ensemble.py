"""Packed training (ml.ensemble: K networks in one loop) against K sequential runs of the shared trainer.

For each K it trains K models packed (seeds 1000..1000+K-1) and K models one after another with
ml.trainer.train (seeds 0..K-1), the same recipe and architecture, and prints one JSON line:
{"bench": "ensemble", "device", "k", "packed_images_per_s", "sequential_images_per_s", "ratio",
"test_acc_packed", "test_acc_sequential", ...}: images/s count every model's training images (K * rows *
epochs) over the wall time of the training calls (data upload included, evaluation not), ratio is packed
over sequential, and the accuracies are the mean test accuracy of each group (with their spread, std).
Sequential runs are shared between lines (K=8's first four are K=4's), each timed on its own, and made
just before the packed run that needs them, so slow drifts of machine load touch both sides alike.
The pack trains in ml.ensemble's lanes (sub-packs in threads of their own, one per CPU thread, so one at
--threads 1: "lanes" in each line; --lanes 1 trains it in one loop at any --threads). The process is set
up as a worker's (mlbench.prepare_process: --threads, and the allocator kept from handing a step's buffers
back to the kernel; --malloc glibc keeps glibc's defaults, for comparison), and each side's page faults
during its training calls are counted ("packed_page_faults", "sequential_page_faults").

--vmap adds "vmap_images_per_s": the same K networks trained by the design ml.ensemble did not choose,
torch.func.stack_module_state + vmap over functional_call (BatchNorm statistics batched per network too),
with the same optimiser, schedule and per-network batches (augmentation: the pack's draws).

Default: digits, ResNet-18 width 8, the leaderboard's recipe (digits' default cut to 8 epochs), one CPU
thread. --cifar: full-width ResNet-18 on random 32x32x3 images with the study's CIFAR-10 recipe and
augmentation (crop, flip, AutoAugment) cut to --epochs; accuracies on random data mean nothing.

    python benchmarks/bench_ensemble.py                          # digits, K = 1..16: ~10 min on 2 shared cores
    python benchmarks/bench_ensemble.py --cifar --n 50000 --epochs 1 --ks 1,8,32   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from mlbench import add_malloc_option, page_faults, prepare_process, sync, synthetic

from ml.data import ArrayDataset, load_dataset
from ml.ensemble import pack_lanes, train_packed
from ml.logits import accuracy
from ml.models import build_model
from ml.specs import STUDY_CIFAR10_RECIPE, ArchSpec, Recipe, default_recipe
from ml.trainer import resolve_device, train

PACKED_SEED = 1000
"""Packed model i trains with seed 1000 + i: a packed run with seed s would start from the same weights and
draw the same batches as the sequential run with seed s, and the accuracy comparison must be of two groups."""


def setup(args: argparse.Namespace) -> tuple[ArrayDataset, ArchSpec, Recipe]:
    """The data set, architecture and recipe the flags ask for."""
    if args.cifar:
        epochs = args.epochs or 1
        return (
            synthetic(args.n, seed=0),
            ArchSpec(width=args.width or 64),
            STUDY_CIFAR10_RECIPE.cut_to(epochs),
        )
    return (
        load_dataset("digits"),
        ArchSpec(width=args.width or 8),
        default_recipe("digits").cut_to(args.epochs or 8),
    )


def fresh(arch: ArchSpec, data: ArrayDataset, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, data.num_classes, data.in_channels)


def test_accuracy(model: torch.nn.Module, data: ArrayDataset, device: torch.device) -> float:
    return accuracy(model, data, None, split="test", device=device)


def train_vmap(
    models: list[torch.nn.Module], data: ArrayDataset, recipe: Recipe, seeds: list[int], device: torch.device
) -> None:
    """The K networks trained as one vmapped functional model: the alternative to grouped convolutions."""
    import copy
    import math

    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from ml.augment import AugmentDraw, Normalizer, build_augmenter
    from ml.trainer import make_scheduler

    k, n, b = len(models), data.n_train, recipe.batch_size
    params, buffers = stack_module_state([m.to(device) for m in models])
    base = copy.deepcopy(models[0]).to("meta")
    leaves = list(params.values())
    opt = torch.optim.SGD(
        leaves,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    steps = math.ceil(n / b)
    sched = make_scheduler(opt, recipe.schedule, recipe.lr, steps, steps * recipe.epochs, recipe.milestones)
    x = torch.from_numpy(data.train_x).to(device)
    y = torch.from_numpy(data.train_y).to(device)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    augmenters = [build_augmenter(recipe.augment, g) for g in gens]
    normalise = Normalizer(data.mean, data.std, device)

    def forward(p: dict, buf: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, buf), (xb,))

    batched = vmap(forward)
    for _ in range(recipe.epochs):
        perm = torch.stack([torch.randperm(n, device=device, generator=g) for g in gens])
        for i in range(steps):
            pos = perm[:, i * b : (i + 1) * b]
            flat = x[pos.reshape(-1)]
            if augmenters[0] is not None:
                draws = AugmentDraw.cat([a.draw(pos.shape[1], *flat.shape[2:]) for a in augmenters])  # type: ignore[union-attr]
                flat = augmenters[0].apply(flat, draws)
            out = batched(params, buffers, normalise(flat).view(k, pos.shape[1], *flat.shape[1:]))
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y[pos].reshape(-1), reduction="none")
            opt.zero_grad(set_to_none=True)
            loss.view(k, -1).mean(1).sum().backward()
            opt.step()
            sched.step()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ks", default="1,2,4,8,16", help="pack sizes, comma-separated")
    parser.add_argument("--cifar", action="store_true", help="full-width ResNet-18 on random 32x32x3 images")
    parser.add_argument("--n", type=int, default=1024, help="--cifar: random training images")
    parser.add_argument(
        "--epochs", type=int, default=0, help="recipe epochs (0: 8 for digits, 1 for --cifar)"
    )
    parser.add_argument(
        "--width", type=int, default=0, help="ResNet-18 width (0: 8 for digits, 64 for --cifar)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--lanes",
        type=int,
        default=0,
        help="sub-packs trained in threads of their own (0: ml.ensemble.pack_lanes, one per CPU thread; 1: one loop)",
    )
    add_malloc_option(parser)
    parser.add_argument("--vmap", action="store_true", help="also time torch.func's vmap over the K networks")
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",") if k})
    if not ks or ks[0] < 1:
        parser.error("--ks must list pack sizes of at least 1")
    process = prepare_process(args.threads, args.malloc)
    device = resolve_device(args.device)
    data, arch, recipe = setup(args)
    per_model = data.n_train * recipe.epochs
    base = {
        "bench": "ensemble",
        "device": str(device),
        "dataset": "random32" if args.cifar else "digits",
        "width": arch.width,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "augment": recipe.augment.model_dump(),
        "n_train": data.n_train,
        **process,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    seq_seconds: list[float] = []
    seq_faults: list[int] = []
    seq_acc: list[float] = []
    for k in ks:
        while len(seq_seconds) < k:  # the sequential runs this line needs and earlier lines did not make
            model = fresh(arch, data, len(seq_seconds))
            sync(device)
            start, faults = time.perf_counter(), page_faults()
            train(model, data, None, recipe, seed=len(seq_seconds), device=device)
            sync(device)
            seq_seconds.append(time.perf_counter() - start)
            seq_faults.append(page_faults() - faults)
            seq_acc.append(test_accuracy(model, data, device))
        seeds = [PACKED_SEED + i for i in range(k)]
        models = [fresh(arch, data, s) for s in seeds]
        sync(device)
        start, faults = time.perf_counter(), page_faults()
        lanes = args.lanes or pack_lanes(device, k)
        train_packed(models, data, [None] * k, recipe, seeds=seeds, device=device, lanes=lanes)
        sync(device)
        packed_s = time.perf_counter() - start
        packed_faults = page_faults() - faults
        packed_acc = [test_accuracy(m, data, device) for m in models]
        sequential_s = sum(seq_seconds[:k])
        line = {
            **base,
            "k": k,
            "lanes": lanes,
            "packed_images_per_s": round(k * per_model / packed_s, 1),
            "sequential_images_per_s": round(k * per_model / sequential_s, 1),
            "ratio": round(sequential_s / packed_s, 3),
            "test_acc_packed": round(float(np.mean(packed_acc)), 4),
            "test_acc_sequential": round(float(np.mean(seq_acc[:k])), 4),
            "test_acc_packed_std": round(float(np.std(packed_acc)), 4),
            "test_acc_sequential_std": round(float(np.std(seq_acc[:k])), 4),
            "packed_seconds": round(packed_s, 2),
            "sequential_seconds": round(sequential_s, 2),
            "packed_page_faults": packed_faults,
            "sequential_page_faults": sum(seq_faults[:k]),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        if args.vmap:
            vmapped = [fresh(arch, data, s) for s in seeds]
            sync(device)
            start = time.perf_counter()
            train_vmap(vmapped, data, recipe, seeds, device)
            sync(device)
            line["vmap_images_per_s"] = round(k * per_model / (time.perf_counter() - start), 1)
        if device.type == "cuda":
            line["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
