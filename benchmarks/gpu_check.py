"""One GPU check in under 8 minutes: trainer speed per precision, concurrent jobs, every method's time, memory.

Prints JSON lines as it goes (a cut-off run keeps what it measured):
  - setup: device, GPU name, torch, threads, sizes, smoke or not;
  - section "trainer": images/s of ml.trainer.fit on a ResNet-18 (width 64 = standard) over random
    CIFAR-shaped uint8 data (32x32x3), per batch size (128, 512) and variant: fp32, bf16 (autocast only),
    bf16_channels_last (the trainer's `fast` path, its CUDA default) and bf16_channels_last_compile (the
    same through fit's compile switch, as LETHE_TORCH_COMPILE trains: inductor in CUDA graph mode on CUDA,
    `compile_mode` in its line), with the ratio to fp32 at the same batch. fit's own clock is used
    (TrainStats: after the data upload, ended by a host sync); a warm-up call first takes the one-time
    costs (cudnn autotuning, compilation, CUDA graph capture: `warmup_s`), and the timed call reuses them;
  - section "concurrency": total images/s of 1, 2, 4 training jobs at once, each a separate process on
    the one device (the trainer's default path), started together behind a barrier after a warm-up;
  - section "methods": each method's wall time (ml.methods.run_method, default params) on a CIFAR-sized
    random set (50,000 images, 10% forgotten) and its ratio to retrain's time, where retrain uses the
    study's CIFAR-10 recipe cut to --retrain-epochs (ratio_at_study_recipe scales retrain to 100 epochs),
    beside ml.methods.cost's predicted ratio; cheapest first, and one that would overrun is skipped;
  - section "ensemble": total images/s of ml.ensemble's packed training (K networks in one process, batch
    --job-batch per network, the study's augmentation: crop, flip, AutoAugment) per pack size K, eager and
    through torch.compile, each after a warm-up call; `study_80_refs_hours` extrapolates the study's 80
    reference models (100 epochs of 45,000 images each) at that rate: 80 * 100 * 45,000 / images_per_s;
    its first line (variant "device_pack_size") is the K a worker picks on this device when LETHE_PACK_SIZE
    is unset (ml.ensemble.device_pack_size: what the free memory holds, at most 32);
  - summary: total seconds and the overall peak memory.
Every measurement line has peak_memory_mib: torch.cuda.max_memory_allocated on CUDA (reset before each
measurement), the process's peak RSS on CPU. Accuracies are meaningless on random data and not reported.

The trainer has no bf16-without-channels_last switch, so bf16 wraps the model in an autocast module; the
compile variant sets fit(compile_model=True, compile_backend=...). fit falls back to eager when compilation
fails; the check reports that as the variant's error rather than eager figures under the compile name.

With no CUDA device (or --cpu-smoke) it runs tiny sizes on the CPU in about half a minute, so CI can
check it; the smoke compiles with the "eager" backend (tracing only, no C++ toolchain needed).

    python benchmarks/gpu_check.py                      # CUDA: full sizes, under 8 minutes on one GPU
    python benchmarks/gpu_check.py --cpu-smoke          # tiny sizes on the CPU
    python benchmarks/gpu_check.py --sections trainer,methods --budget-s 300
    python benchmarks/gpu_check.py --sections methods --methods salun,l1_sparse   # retrain always runs too
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from common import exit_on_sigterm
from mlbench import sync, synthetic
from torch import nn

from ml.data.base import ArrayDataset
from ml.models import build_model
from ml.specs import STUDY_CIFAR10_RECIPE, ArchSpec
from ml.trainer import compile_mode, fit, resolve_device

VARIANTS = ("fp32", "bf16", "bf16_channels_last", "bf16_channels_last_compile")
SECTIONS = ("trainer", "concurrency", "methods", "ensemble")
STUDY_REFERENCE_IMAGES = 80 * 100 * 45_000
"""What the study's 80 reference models train on in all: 100 epochs of 45,000 images each."""
STUDY_EPOCHS = STUDY_CIFAR10_RECIPE.epochs


@dataclass(frozen=True)
class Sizes:
    """Everything that makes the check long or short."""

    width: int = 64
    batches: tuple[int, ...] = (128, 512)
    warmup_steps: int = 3
    timed_steps: int = 100
    compile_backend: str = "inductor"
    jobs: tuple[int, ...] = (1, 2, 4)
    job_batch: int = 128
    job_steps: int = 200
    methods_n: int = 50_000
    forget_fraction: float = 0.1
    retrain_epochs: int = 5
    ensemble_ks: tuple[int, ...] = (1, 8, 16, 32)
    ensemble_steps: int = 40
    ensemble_variants: tuple[str, ...] = ("eager", "compile")


SMOKE = Sizes(
    width=4,
    batches=(8,),
    warmup_steps=1,
    timed_steps=2,
    compile_backend="eager",
    jobs=(1, 2),
    job_batch=8,
    job_steps=2,
    methods_n=48,
    retrain_epochs=1,
    ensemble_ks=(1, 2),
    ensemble_steps=2,
)


class Bf16(nn.Module):
    """Runs the wrapped model under bf16 autocast and returns float32 logits (the loss stays fp32)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.inner(x).float()


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak memory since the last reset_peak (CUDA), or the process's lifetime peak RSS (CPU)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class CompileFailed(RuntimeError):
    """fit trained eagerly because torch.compile failed; the message is fit's warning saying why."""


class _Warnings(logging.Handler):
    """Collects the trainer's warnings during one fit call."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def fit_images(
    model: nn.Module,
    data: ArrayDataset,
    n: int,
    batch: int,
    device: torch.device,
    fast: bool | None,
    backend: str | None = None,
) -> tuple[float, float]:
    """One epoch of fit over the first n images, no augmentation; (fit's seconds, wall seconds).

    With a compile `backend`, fit trains through torch.compile; CompileFailed when it fell back to eager.
    """
    caught = _Warnings()
    trainer_log = logging.getLogger("ml.trainer")
    trainer_log.addHandler(caught)
    sync(device)
    start = time.perf_counter()
    try:
        stats = fit(
            model,
            data,
            np.arange(n),
            epochs=1,
            lr=0.01,
            batch_size=batch,
            seed=0,
            device=device,
            fast=fast,
            compile_model=backend is not None,
            compile_backend=backend,
        )
    finally:
        trainer_log.removeHandler(caught)
    sync(device)
    if backend is not None and not stats.compiled:
        raise CompileFailed("; ".join(caught.messages) or f"torch.compile ({backend}) fell back to eager")
    return stats.seconds, time.perf_counter() - start


def prepare(variant: str, width: int, backend: str) -> tuple[nn.Module, bool, str | None]:
    """The model fit trains for a variant, fit's `fast` flag (bf16 autocast + channels_last), its backend.

    The backend is torch.compile's for the compile variant, None (eager) for the others.
    """
    torch.manual_seed(0)
    model = build_model(ArchSpec(width=width), 10, 3)
    if variant == "fp32":
        return model, False, None
    if variant == "bf16":
        return Bf16(model), False, None
    if variant == "bf16_channels_last":
        return model, True, None
    return model, True, backend


def trainer_section(
    sizes: Sizes, device: torch.device, left: Callable[[], float], variants: Sequence[str] = VARIANTS
) -> None:
    """images/s per (batch, variant), each after its own warm-up call."""
    data = synthetic(max(sizes.batches) * max(sizes.timed_steps, sizes.warmup_steps), seed=0)
    for batch in sizes.batches:
        fp32_rate = None
        for variant in variants:
            base = {"section": "trainer", "batch": batch, "variant": variant, "width": sizes.width}
            if left() <= 0:
                emit({**base, "skipped": "time budget"})
                continue
            if variant.endswith("compile"):
                base["compile_backend"] = sizes.compile_backend
                base["compile_mode"] = compile_mode(sizes.compile_backend, device)
            try:
                model, fast, backend = prepare(variant, sizes.width, sizes.compile_backend)
                reset_peak(device)
                _, warm_wall = fit_images(
                    model, data, batch * sizes.warmup_steps, batch, device, fast, backend
                )
                seconds, wall = fit_images(
                    model, data, batch * sizes.timed_steps, batch, device, fast, backend
                )
            except Exception as exc:  # a missing compiler or kernel must not end the whole check
                emit({**base, "error": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            finally:
                if variant.endswith("compile"):
                    torch._dynamo.reset()
            images = batch * sizes.timed_steps
            rate = images / seconds
            fp32_rate = rate if variant == "fp32" else fp32_rate
            emit(
                {
                    **base,
                    "images": images,
                    "images_per_s": round(rate, 1),
                    "step_ms": round(1000 * seconds / sizes.timed_steps, 3),
                    "wall_images_per_s": round(images / wall, 1),
                    "warmup_s": round(warm_wall, 2),
                    "vs_fp32": round(rate / fp32_rate, 3) if fp32_rate else None,
                    "peak_memory_mib": peak_mib(device),
                }
            )
            del model
            free(device)


def job_process(
    rank: int,
    device: str,
    sizes: Sizes,
    threads: int,
    barriers: dict[int, Any],
    results: Any,
) -> None:
    """One training job of the concurrency section, reused at every level it takes part in.

    It warms up once, then for each level k with rank < k waits for the k-1 others and trains. A broken
    barrier (the parent ran out of time) ends it.
    """
    try:
        torch.set_num_threads(threads)
        dev = resolve_device(device)
        data = synthetic(sizes.job_batch * max(sizes.job_steps, sizes.warmup_steps), seed=rank)
        torch.manual_seed(rank)
        model = build_model(ArchSpec(width=sizes.width), 10, 3)
        fit_images(model, data, sizes.job_batch * sizes.warmup_steps, sizes.job_batch, dev, None)
        for k in sizes.jobs:
            if rank >= k:
                continue
            reset_peak(dev)
            barriers[k].wait(timeout=900)
            start = time.monotonic()
            fit_images(model, data, sizes.job_batch * sizes.job_steps, sizes.job_batch, dev, None)
            end = time.monotonic()
            results.put(
                {
                    "jobs": k,
                    "rank": rank,
                    "start": start,
                    "end": end,
                    "images": sizes.job_batch * sizes.job_steps,
                    "peak_memory_mib": peak_mib(dev),
                }
            )
    except threading.BrokenBarrierError:
        return
    except BaseException as exc:
        for barrier in barriers.values():
            barrier.abort()
        results.put({"rank": rank, "error": f"{type(exc).__name__}: {exc}"[:500]})


def concurrency_section(sizes: Sizes, device: torch.device, threads: int, left: Callable[[], float]) -> None:
    """Total images/s with k jobs training at once in k processes on the one device.

    max(jobs) processes start (and warm up) once; level k runs ranks 0..k-1 together behind a barrier.
    """
    ctx = mp.get_context("spawn")
    barriers = {k: ctx.Barrier(k) for k in sizes.jobs}
    results = ctx.Queue()
    procs = [
        ctx.Process(target=job_process, args=(rank, str(device), sizes, threads, barriers, results))
        for rank in range(max(sizes.jobs))
    ]
    for proc in procs:
        proc.start()
    single = None
    failed = False
    try:
        for k in sizes.jobs:
            base = {"section": "concurrency", "jobs": k, "batch": sizes.job_batch, "width": sizes.width}
            if failed or left() <= 0:
                emit({**base, "skipped": "an earlier level failed" if failed else "time budget"})
                continue
            got: list[dict[str, Any]] = []
            try:
                while len(got) < k:
                    got.append(results.get(timeout=max(120.0, left() + 120)))
                    if "error" in got[-1]:
                        break
            except queue.Empty:
                got.append({"error": "no result in time"})
            errors = [r["error"] for r in got if "error" in r]
            if errors:
                failed = True
                emit({**base, "error": errors[0]})
                continue
            span = max(r["end"] for r in got) - min(r["start"] for r in got)
            total = sum(r["images"] for r in got) / span
            single = total if k == 1 else single
            emit(
                {
                    **base,
                    "variant": "trainer default (bf16 + channels_last on CUDA, fp32 on CPU)",
                    "images_per_job": got[0]["images"],
                    "total_images_per_s": round(total, 1),
                    "per_job_images_per_s": sorted(
                        round(r["images"] / (r["end"] - r["start"]), 1) for r in got
                    ),
                    "scaling_vs_1_job": round(total / single, 3) if single else None,
                    "peak_memory_mib": max(r["peak_memory_mib"] for r in got),
                    "peak_memory_mib_per_job": [
                        r["peak_memory_mib"] for r in sorted(got, key=lambda r: r["rank"])
                    ],
                }
            )
    finally:
        for barrier in barriers.values():
            barrier.abort()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()


def methods_section(
    sizes: Sizes, device: torch.device, left: Callable[[], float], methods: Sequence[str] | None = None
) -> None:
    """Each method's seconds on a CIFAR-sized random set, beside the cost model's prediction.

    Retrain runs first (every ratio divides by it), then the others from the cheapest by
    ml.methods.cost; retrain's seconds per sample-pass estimate each next method's time, and a method
    that would not end within the budget is skipped, so the check keeps its time limit.
    """
    from ml.methods import METHOD_SPECS, UnlearnData, run_method
    from ml.methods.cost import sample_passes

    data_set = synthetic(sizes.methods_n, seed=0)
    rng = np.random.default_rng(0)
    forget = np.sort(
        rng.choice(sizes.methods_n, max(1, round(sizes.forget_fraction * sizes.methods_n)), replace=False)
    )
    recipe = STUDY_CIFAR10_RECIPE.cut_to(sizes.retrain_epochs)
    arch = ArchSpec(width=sizes.width)
    data = UnlearnData(data_set, forget, recipe=recipe, arch=arch)
    torch.manual_seed(0)
    model = build_model(arch, data_set.num_classes, data_set.in_channels).to(device)
    passes = {name: sample_passes(name, None, data) for name in METHOD_SPECS}
    chosen = {"retrain", *(METHOD_SPECS if methods is None else methods)}
    names = sorted(chosen, key=lambda name: (name != "retrain", passes[name], name))
    retrain_s = None
    for name in names:
        base = {
            "section": "methods",
            "method": name,
            "n_train": sizes.methods_n,
            "forget": len(forget),
            "width": sizes.width,
            "retrain_epochs": sizes.retrain_epochs,
            "predicted_ratio_to_retrain": round(passes[name] / passes["retrain"], 4),
        }
        estimate = retrain_s * passes[name] / passes["retrain"] if retrain_s else 0.0
        if left() <= estimate:
            emit({**base, "skipped": "time budget", "estimated_s": round(estimate, 1)})
            continue
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        try:
            out = run_method(name, model, data, {}, seed=0, device=device)
        except Exception as exc:
            emit({**base, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        sync(device)
        seconds = time.perf_counter() - start
        del out
        retrain_s = seconds if name == "retrain" else retrain_s
        ratio = seconds / retrain_s if retrain_s else None
        emit(
            {
                **base,
                "seconds": round(seconds, 3),
                "ratio_to_retrain": None if ratio is None else round(ratio, 4),
                "ratio_at_study_recipe": None
                if ratio is None
                else round(ratio * sizes.retrain_epochs / STUDY_EPOCHS, 5),
                "peak_memory_mib": peak_mib(device),
            }
        )
        free(device)


def ensemble_section(sizes: Sizes, device: torch.device, left: Callable[[], float]) -> None:
    """Total images/s of packed training per (variant, K): one epoch of ensemble_steps batches per network."""
    from ml.ensemble import device_pack_size, fit_packed

    data = synthetic(sizes.job_batch * sizes.ensemble_steps, seed=0)
    aug = STUDY_CIFAR10_RECIPE.augment
    # The K a worker picks here when LETHE_PACK_SIZE is unset: what the free memory holds, one step measured.
    torch.manual_seed(0)
    probe = build_model(ArchSpec(width=sizes.width), 10, 3)
    emit(
        {
            "section": "ensemble",
            "variant": "device_pack_size",
            "batch": sizes.job_batch,
            "width": sizes.width,
            "k": device_pack_size(probe, data.train_x.shape[1:], sizes.job_batch, device),
        }
    )
    del probe
    for variant in sizes.ensemble_variants:
        for k in sizes.ensemble_ks:
            base = {"section": "ensemble", "variant": variant, "k": k, "batch": sizes.job_batch}
            base["width"] = sizes.width
            if left() <= 0:
                emit({**base, "skipped": "time budget"})
                continue
            compiled = variant == "compile"
            if compiled:
                base["compile_backend"] = sizes.compile_backend
            try:
                torch.manual_seed(0)
                models = [build_model(ArchSpec(width=sizes.width), 10, 3) for _ in range(k)]
                reset_peak(device)
                timings = []
                for n in (sizes.job_batch * min(2, sizes.ensemble_steps), data.n_train):  # warm-up, timed
                    sync(device)
                    start = time.perf_counter()
                    stats = fit_packed(
                        models,
                        data,
                        [np.arange(n)] * k,
                        seeds=list(range(k)),
                        epochs=1,
                        lr=0.01,
                        batch_size=sizes.job_batch,
                        augment=aug,
                        device=device,
                        compile_model=compiled,
                        compile_backend=sizes.compile_backend if compiled else None,
                    )
                    sync(device)
                    timings.append(time.perf_counter() - start)
                if compiled and not stats[0].compiled:
                    raise CompileFailed(f"torch.compile ({sizes.compile_backend}) fell back to eager")
            except Exception as exc:  # out of memory at a large K must not end the whole check
                emit({**base, "error": f"{type(exc).__name__}: {exc}"[:500]})
                free(device)
                continue
            finally:
                if compiled:
                    torch._dynamo.reset()
            rate = k * data.n_train / timings[1]
            emit(
                {
                    **base,
                    "images_per_s": round(rate, 1),
                    "per_model_images_per_s": round(rate / k, 1),
                    "warmup_s": round(timings[0], 2),
                    "study_80_refs_hours": round(STUDY_REFERENCE_IMAGES / rate / 3600, 3),
                    "peak_memory_mib": peak_mib(device),
                }
            )
            del models
            free(device)


def main(argv: list[str] | None = None) -> None:
    """Pick the device and sizes, print the setup, run the sections within the time budget."""
    exit_on_sigterm()  # the concurrency section's processes are stopped in its `finally`
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny sizes on the CPU (the default without CUDA)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS)
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="seconds after which no measurement starts"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="trainer variants, comma-separated: " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--methods", default=None, help="methods to time, comma-separated (default: all; retrain always runs)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU)")
    parser.add_argument(
        "--retrain-epochs", type=int, default=None, help="retrain's epochs in the methods section"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    device = resolve_device(args.device or ("cpu" if smoke else "cuda"))
    sizes = SMOKE if smoke else Sizes()
    if args.retrain_epochs:
        sizes = replace(sizes, retrain_epochs=args.retrain_epochs)
    threads = args.threads or (1 if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    sections = args.sections.split(",")
    variants = args.variants.split(",")
    methods = args.methods.split(",") if args.methods else None
    from ml.methods import METHOD_SPECS

    for kind, chosen, valid in (
        ("sections", sections, SECTIONS),
        ("variants", variants, VARIANTS),
        ("methods", methods or [], sorted(METHOD_SPECS)),
    ):
        unknown = set(chosen) - set(valid)
        if unknown:
            raise SystemExit(f"unknown {kind} {sorted(unknown)}; valid: {', '.join(valid)}")
    setup: dict[str, Any] = {
        "section": "setup",
        "device": str(device),
        "smoke": smoke,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "sizes": asdict(sizes),
        "budget_s": args.budget_s,
        "sections": sections,
        "variants": variants,
        "methods": methods or "all",
    }
    if device.type == "cuda":
        setup["gpu"] = torch.cuda.get_device_name(device)
        setup["bf16_supported"] = torch.cuda.is_bf16_supported()
    emit(setup)

    def left() -> float:
        return args.budget_s - (time.monotonic() - started)

    if "trainer" in sections:
        trainer_section(sizes, device, left, variants)
    if "concurrency" in sections:
        concurrency_section(sizes, device, threads, left)
    if "methods" in sections:
        methods_section(sizes, device, left, methods)
    if "ensemble" in sections:
        ensemble_section(sizes, device, left)
    summary: dict[str, Any] = {"section": "summary", "total_s": round(time.monotonic() - started, 1)}
    if device.type == "cuda":
        summary["peak_memory_mib_process"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    else:
        summary["peak_memory_mib_process"] = peak_mib(device)
    emit(summary)


if __name__ == "__main__":
    main()
