"""Helpers shared by the training benchmarks (torch imported): random data, device syncs, the original model."""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from torch import nn

from ml.allocator import keep_freed_memory
from ml.data import ArrayDataset
from ml.ensemble import train_packed
from ml.logits import evaluate
from ml.methods import UnlearnData
from ml.models import build_model
from ml.trainer import train


def synthetic(
    n: int, seed: int, size: int = 32, classes: int = 10, n_test: int | None = None
) -> ArrayDataset:
    """Random RGB uint8 images (CIFAR-shaped by default) and labels: speed does not depend on the pixels,
    and accuracies on them mean nothing. The test split is the first n_test rows (default n // 5, at least 1)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    y = rng.integers(0, classes, n, dtype=np.int64)
    n_test = max(1, n // 5) if n_test is None else n_test
    return ArrayDataset(
        "synthetic", x, y, x[:n_test], y[:n_test], classes, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    )


MALLOC_CHOICES = ("worker", "glibc")
"""--malloc: the C library's allocator as the worker sets it (ml.allocator), or glibc's defaults."""


def add_malloc_option(parser: argparse.ArgumentParser) -> None:
    """--malloc, for prepare_process's malloc."""
    parser.add_argument(
        "--malloc",
        choices=MALLOC_CHOICES,
        default="worker",
        help="the allocator as the worker sets it (ml.allocator), or glibc's defaults",
    )


def prepare_process(threads: int, malloc: str = "worker") -> dict[str, object]:
    """A benchmark process set up as a worker's pool process is (torch threads; the allocator, unless malloc
    is "glibc"): the fields its JSON lines carry to say so."""
    torch.set_num_threads(threads)
    tuned = malloc == "worker" and keep_freed_memory()
    return {"threads": torch.get_num_threads(), "malloc": "worker" if tuned else "glibc"}


def page_faults() -> int:
    """Minor page faults of this process so far (each a page the kernel handed over, zero-filled)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_original(
    data: UnlearnData, seed: int, device: torch.device, *, bench: str, retain_only: bool = False
) -> nn.Module:
    """The model a benchmark unlearns from: trained on all of data's training rows (only its retain rows with
    `retain_only`) with its recipe and architecture, seeded; prints one JSON line, under the calling
    benchmark's `bench` name, with its training seconds and accuracies."""
    dataset = data.dataset
    torch.manual_seed(seed)
    model = build_model(data.arch, dataset.num_classes, dataset.in_channels)
    start = time.perf_counter()
    train(model, dataset, data.retain_ids if retain_only else None, data.recipe, seed=seed, device=device)
    sync(device)
    record = {"bench": bench, "original": True, "seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps({**record, **evaluate(model, data, device=device)}), flush=True)
    return model


def train_originals(
    data: UnlearnData, seeds: list[int], device: torch.device, *, bench: str, retain_only: bool = False
) -> list[nn.Module]:
    """One original per seed, as train_original builds and trains each, trained together in one pack (the
    same models up to float rounding); prints one JSON line with the seconds and the mean accuracies."""
    models, seconds = _train_pack(data, seeds, device, data.retain_ids if retain_only else None)
    record = {"bench": bench, "originals": len(seeds), "seconds": round(seconds, 2)}
    scores = [evaluate(m, data, device=device) for m in models]
    means = {k: None if scores[0][k] is None else float(np.mean([s[k] for s in scores])) for k in scores[0]}
    print(json.dumps({**record, **means}), flush=True)
    return models


def retrain_reference(data: UnlearnData, seed: int, device: torch.device) -> tuple[torch.nn.Module, float]:
    """A model trained from scratch on the retain set, seeded as the service's reference runs are."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(data.arch, data.dataset.num_classes, data.dataset.in_channels)
    train(model, data.dataset, data.retain_ids, data.recipe, seed=seed, device=device)
    sync(device)
    return model, time.perf_counter() - start


def packed_references(
    data: UnlearnData, seeds: list[int], device: torch.device
) -> tuple[list[torch.nn.Module], float]:
    """Reference models for `seeds`, trained as one pack (ml.ensemble): each initialised and seeded as
    retrain_reference's; returns them and the wall time per model."""
    models, seconds = _train_pack(data, seeds, device, data.retain_ids)
    return models, seconds / len(seeds)


def _train_pack(
    data: UnlearnData, seeds: list[int], device: torch.device, rows: np.ndarray | None
) -> tuple[list[torch.nn.Module], float]:
    """One model per seed (built right after seeding, as one trained alone is), trained together on `rows`
    (None: every training row) with data's recipe; the models and the pack's wall seconds."""
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(data.arch, data.dataset.num_classes, data.dataset.in_channels))
    start = time.perf_counter()
    train_packed(models, data.dataset, [rows] * len(seeds), data.recipe, seeds=seeds, device=device)
    sync(device)
    return models, time.perf_counter() - start
