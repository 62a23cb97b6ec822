"""SSD's damage and its forgetting over seeds and forget-set sizes, on the set-up of tests/gpu/test_cuda.py.

Per seed one original trains (digits, width 16, 3 epochs at lr 0.05, batch 64, model init and shuffling
seeded with the seed), as the CUDA test trains it, and per forget fraction a random forget set is drawn with
the seed ("tenth" = every tenth sample, the CUDA test's; "class3" = every sample of class 3). A model
retrained without the forget set gives the forget accuracy to aim at. Then each variant of SSD runs on the
original and prints one line with test / forget / retain accuracy after, and the share of weights dampened
per kind of parameter; the original's and the retrained model's accuracies come on a line before.

    python benchmarks/bench_ssd.py --seeds 0-9 --fractions 0.005,0.02,0.1,tenth \
        --variants '{"unguarded": {"max_retain_drop": null}, "default": {}}'

--ablate also applies the unguarded rule to one kind of parameter at a time (the same importances), to
show whose dampening breaks a model. CPU, one thread by default (--threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.data import ArrayDataset, load_dataset
from ml.data.forget import class_forget_ids, random_forget_ids
from ml.logits import accuracy
from ml.methods import UnlearnData, run_method
from ml.methods.base import Run
from ml.methods.params import SSDParams
from ml.methods.ssd import dampen, importances
from ml.models import build_model
from ml.specs import ArchSpec, Recipe
from ml.trainer import fit

KINDS = ("conv.weight", "norm.weight", "norm.bias", "linear.weight", "linear.bias")


def kinds(model: nn.Module) -> dict[str, str]:
    """Each parameter's name -> its kind (conv / norm / linear, weight / bias)."""
    out = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            kind = "conv"
        elif isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
            kind = "norm"
        elif isinstance(module, nn.Linear):
            kind = "linear"
        else:
            continue
        for p_name, _ in module.named_parameters(recurse=False):
            out[f"{mod_name}.{p_name}" if mod_name else p_name] = f"{kind}.{p_name}"
    return out


def dampened_shares(before: nn.Module, after: nn.Module) -> dict[str, float]:
    """Per kind, the share of its weights the method changed (SSD only ever shrinks)."""
    kind_of = kinds(before)
    moved = dict.fromkeys(KINDS, 0)
    total = dict.fromkeys(KINDS, 0)
    new = dict(after.named_parameters())
    for name, p in before.named_parameters():
        kind = kind_of[name]
        moved[kind] += int((p.detach() != new[name].detach()).sum())
        total[kind] += p.numel()
    return {k: round(moved[k] / total[k], 5) for k in KINDS if total[k]}


def accuracies(model: nn.Module, data: UnlearnData) -> dict[str, float]:
    ds = data.dataset
    return {
        "test": round(accuracy(model, ds, None, split="test"), 4),
        "forget": round(accuracy(model, ds, data.forget_ids), 4),
        "retain": round(accuracy(model, ds, data.retain_ids), 4),
    }


def trained(ds: ArrayDataset, arch: ArchSpec, ids: np.ndarray | None, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, ds.num_classes, ds.in_channels)
    fit(model, ds, ids, epochs=epochs, lr=0.05, batch_size=64, seed=seed, device="cpu")
    return model


def ablate(model: nn.Module, data: UnlearnData, seed: int) -> dict[str, dict[str, Any]]:
    """The unguarded rule at the defaults on each kind alone and on all kinds but one, same importances."""
    p = SSDParams()
    run = Run(seed=seed, device=torch.device("cpu"))
    full = np.concatenate([data.retain_ids, data.forget_ids])
    batch = min(p.batch_size, max(1, len(data.forget_ids)))
    f_imp = importances(model, data, data.forget_ids, batch, run, progress=None, stage="f")
    g_imp = importances(model, data, full, batch, run, progress=None, stage="g")
    names = [n for n, q in model.named_parameters() if q.requires_grad]
    kind_of = kinds(model)
    out = {}
    subsets = {f"only:{k}": {k} for k in KINDS} | {f"all_but:{k}": set(KINDS) - {k} for k in KINDS}
    for label, chosen in subsets.items():
        copy = trained_copy(model)
        params = [q for q in copy.parameters() if q.requires_grad]
        keep = [i for i, n in enumerate(names) if kind_of[n] in chosen]
        dampen(
            [params[i] for i in keep],
            [g_imp[i] for i in keep],
            [f_imp[i] for i in keep],
            p.alpha,
            p.dampening,
        )
        out[label] = accuracies(copy, data)
    return out


def trained_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-9", help="0-9 or 0,3,5")
    ap.add_argument(
        "--fractions",
        default="0.005,0.02,0.1",
        help="forget fractions; 'tenth' = every 10th, 'class3' = all of class 3",
    )
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--variants", default='{"default": {}}', help="JSON: label -> SSD params")
    ap.add_argument("--ablate", action="store_true", help="also dampen one kind of parameter at a time")
    ap.add_argument("--no-retrain", action="store_true", help="skip the retrained reference")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants: dict[str, dict[str, Any]] = json.loads(args.variants)
    ds = load_dataset("digits")
    arch = ArchSpec(width=args.width)
    recipe = Recipe(epochs=args.epochs, batch_size=64, lr=0.05)
    print(
        json.dumps({"bench": "ssd", "setup": True, "argv": sys.argv[1:], "n_train": ds.n_train}), flush=True
    )
    for seed in parse_seeds(args.seeds):
        original = trained(ds, arch, None, seed, args.epochs)
        for frac in args.fractions.split(","):
            if frac == "tenth":
                forget = np.arange(0, ds.n_train, 10)
            elif frac.startswith("class"):
                forget = class_forget_ids(ds.train_y, int(frac[5:]))
            else:
                forget = random_forget_ids(ds.n_train, fraction=float(frac), seed=seed)
            data = UnlearnData(ds, forget, recipe=recipe, arch=arch)
            base = {"bench": "ssd", "seed": seed, "fraction": frac, "n_forget": len(forget)}
            row: dict[str, Any] = {**base, "original": accuracies(original, data)}
            if not args.no_retrain:
                retain = np.setdiff1d(np.arange(ds.n_train), forget)
                row["retrained"] = accuracies(trained(ds, arch, retain, seed, args.epochs), data)
            print(json.dumps(row), flush=True)
            for label, params in variants.items():
                start = time.process_time()
                out = run_method("ssd", original, data, params, seed=seed)
                cpu = round(time.process_time() - start, 3)
                line = {**base, "variant": label, "params": params, "cpu_s": cpu, **accuracies(out, data)}
                line["dampened"] = dampened_shares(original, out)
                print(json.dumps(line), flush=True)
            if args.ablate:
                for label, acc in ablate(original, data, seed).items():
                    print(json.dumps({**base, "variant": label, **acc}), flush=True)


if __name__ == "__main__":
    main()
