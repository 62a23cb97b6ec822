"""Training throughput of the shared trainer against a plain PyTorch loop, on the same model and data.

Prints JSON lines: the setup, one line per implementation (images/s), and their ratio (trainer / plain;
above 1 means the trainer is faster). Both train a full-width ResNet-18 on random 32x32x3 images with the
same initial weights, batch size, optimiser (SGD, Nesterov, weight decay) and no augmentation; the plain
loop is a DataLoader over a TensorDataset of normalised float images, in float32. Each side first runs
a warm-up batch so one-time costs (oneDNN kernels, cudnn autotuning) are not timed, then the sides take
turns for --repeats timed runs and each keeps its fastest.

    python benchmarks/bench_train.py                       # CPU: about 1.5 minutes on two cores
    python benchmarks/bench_train.py --device cuda --n 20000 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from mlbench import sync, synthetic
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ml.data.base import ArrayDataset
from ml.models import build_model
from ml.specs import ArchSpec
from ml.trainer import fit, resolve_device

LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


def run_trainer(
    model: nn.Module, data: ArrayDataset, n: int, epochs: int, batch: int, device: torch.device
) -> float:
    """Seconds the shared trainer takes for `epochs` over the first n samples (data upload included)."""
    sync(device)
    start = time.perf_counter()
    fit(
        model,
        data,
        np.arange(n),
        epochs=epochs,
        lr=LR,
        batch_size=batch,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        seed=0,
        device=device,
    )
    sync(device)
    return time.perf_counter() - start


def run_plain(
    model: nn.Module, data: ArrayDataset, n: int, epochs: int, batch: int, device: torch.device
) -> float:
    """Seconds a textbook loop takes for the same work (normalisation done once, up front, untimed)."""
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = (torch.from_numpy(data.train_x[:n]).float() / 255 - mean) / std
    loader = DataLoader(TensorDataset(x, torch.from_numpy(data.train_y[:n])), batch_size=batch, shuffle=True)
    model.to(device).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=256, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 width (64 = standard)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup-batches", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side; the fastest counts")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = synthetic(max(args.n, args.batch * args.warmup_batches), seed=0, size=args.size, n_test=0)
    torch.manual_seed(0)
    base = build_model(ArchSpec(width=args.width), 10, 3)
    setup = {
        "bench": "train",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "n": args.n,
        "epochs": args.epochs,
        "width": args.width,
        "image": [3, args.size, args.size],
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        setup["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(setup), flush=True)
    warm = args.batch * args.warmup_batches
    runners = {"trainer": run_trainer, "plain": run_plain}
    models = {name: copy.deepcopy(base) for name in runners}
    for name, runner in runners.items():
        runner(models[name], data, warm, 1, args.batch, device)
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(args.repeats):  # alternate, so a busy spell on a shared machine hits both sides
        for name, runner in runners.items():
            best[name] = min(best[name], runner(models[name], data, args.n, args.epochs, args.batch, device))
    rates = {name: args.n * args.epochs / seconds for name, seconds in best.items()}
    for name, rate in rates.items():
        print(
            json.dumps({"impl": name, "best_seconds": round(best[name], 3), "images_per_s": round(rate, 1)}),
            flush=True,
        )
    print(json.dumps({"ratio": round(rates["trainer"] / rates["plain"], 3)}), flush=True)


if __name__ == "__main__":
    main()
