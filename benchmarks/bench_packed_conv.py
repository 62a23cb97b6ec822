"""Per-layer cost of a packed convolution (K networks side by side) in each form ml.ensemble can compute it.

For every distinct convolution of the architecture (ResNet-18 at --width on --size x --size images with
--in-channels, the shapes read off a forward pass), a pack of K networks: input [B, K * C_in, H, W], weights
[K * C_out, C_in, kh, kw]; forward + backward (gradients for the weights, and for the input except at the
stem, whose input is data) timed in each form of ml.packed_net.packed_conv2d: "grouped" (oneDNN's grouped
convolution, groups = K), "unfold" (im2col + one batched matrix product over the networks), "window" (only
where the output is one pixel: the weights' live taps as a batched product), and, for scale, "single" (one
network's plain convolution, batch B, times K). Forms run interleaved, --repeats rounds, median per form.

One JSON line per layer: {"bench": "packed_conv", "layer", "count" (how many convolutions of the network
have that shape), "c_in", "c_out", "kernel", "stride", "padding", "hw", "ms" ({form: median ms, forward +
backward}), "chosen" (ml.packed_net.conv_form's pick on a CPU)}; then {"bench": "packed_conv_total", "ms":
{form: sum over the network's convolutions, count-weighted}, "chosen_ms", ...}: "grouped" is the pack before
PackedConv2d's CPU forms, "chosen_ms" with them. The process is set up as a worker's (--threads; the allocator
as ml.allocator sets it, or glibc's defaults with --malloc glibc): with glibc's defaults every form's buffers
come back as fresh pages each call, which costs the larger forms most.

    python benchmarks/bench_packed_conv.py                          # digits shapes, width 8, K = 8, B = 128
    python benchmarks/bench_packed_conv.py --batch 64               # the leaderboard recipe's batch
    python benchmarks/bench_packed_conv.py --width 64 --size 32 --in-channels 3 --batch 32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from mlbench import add_malloc_option, prepare_process

from ml.models import build_model
from ml.packed_net import conv_form, packed_conv2d
from ml.specs import ArchSpec


def conv_shapes(width: int, size: int, in_channels: int) -> list[tuple[str, torch.nn.Conv2d, int, int, int]]:
    """(name, conv, input height, input width, count) for each distinct convolution of the network, in order."""
    model = build_model(ArchSpec(width=width), 10, in_channels)
    seen: dict[tuple, list] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):

            def hook(mod: torch.nn.Module, args: tuple, _out: torch.Tensor, name: str = name) -> None:
                conv = mod  # type: ignore[assignment]
                _, _, h, w = args[0].shape
                key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, h, w)
                if key in seen:
                    seen[key][4] += 1
                else:
                    seen[key] = [name, conv, h, w, 1]

            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(2, in_channels, size, size))
    for h in hooks:
        h.remove()
    return [tuple(v) for v in seen.values()]  # type: ignore[misc]


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    conv: torch.nn.Conv2d, h: int, w: int, k: int, b: int, *, stem: bool, repeats: int
) -> dict[str, float]:
    """Median ms of forward + backward per form for a pack of k copies of conv's shape on [b, k * C_in, h, w]."""
    c, co = conv.in_channels, conv.out_channels
    stride, padding = conv.stride, conv.padding
    x = torch.randn(b, k * c, h, w, requires_grad=not stem)
    weight = torch.randn(k * co, c, *conv.kernel_size, requires_grad=True)
    x1 = torch.randn(b, c, h, w, requires_grad=not stem)
    w1 = torch.randn(co, c, *conv.kernel_size, requires_grad=True)
    grad = torch.randn_like(F.conv2d(x, weight, None, stride, padding, 1, k))
    grad1 = torch.randn_like(F.conv2d(x1, w1, None, stride, padding))
    forms = ["grouped", "unfold"] + (["window"] if grad.shape[-2:] == (1, 1) else [])

    def step(form: str) -> Callable[[], None]:
        def run() -> None:
            x.grad = weight.grad = None
            packed_conv2d(x, weight, None, k, stride, padding, form).backward(grad)  # type: ignore[arg-type]

        return run

    def single() -> None:
        for _ in range(k):
            x1.grad = w1.grad = None
            F.conv2d(x1, w1, None, stride, padding).backward(grad1)

    runs = {form: step(form) for form in forms} | {"single": single}
    times: dict[str, list[float]] = {form: [] for form in runs}
    for _ in range(3):
        for run in runs.values():
            run()
    for _ in range(repeats):
        for form, run in runs.items():
            times[form].append(timed(run))
    return {form: round(statistics.median(t) * 1e3, 3) for form, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--k", type=int, default=8, help="networks per pack")
    parser.add_argument("--batch", type=int, default=128, help="images per network")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--size", type=int, default=8, help="image side (digits: 8)")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    add_malloc_option(parser)
    args = parser.parse_args()
    process = prepare_process(args.threads, args.malloc)
    torch.manual_seed(0)
    k, b = args.k, args.batch
    base = {
        "k": k,
        "batch": b,
        "width": args.width,
        "size": args.size,
        **process,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    totals: dict[str, float] = {}
    chosen_total = 0.0
    for index, (name, conv, h, w, count) in enumerate(conv_shapes(args.width, args.size, args.in_channels)):
        ms = measure(conv, h, w, k, b, stem=index == 0, repeats=args.repeats)
        c, co, stride, padding = conv.in_channels, conv.out_channels, conv.stride, conv.padding
        packed = torch.nn.Conv2d(k * c, k * co, conv.kernel_size, stride, padding, groups=k, bias=False)
        chosen = conv_form((b, k * c, h, w), packed, k)
        for form, value in ms.items():
            totals[form] = totals.get(form, 0.0) + value * count
        chosen_total += ms[chosen] * count
        line = {
            "bench": "packed_conv",
            **base,
            "layer": name,
            "count": count,
            "c_in": c,
            "c_out": co,
            "kernel": list(conv.kernel_size),
            "stride": list(stride),
            "padding": list(padding),
            "hw": [h, w],
            "ms": ms,
            "chosen": chosen,
        }
        print(json.dumps(line), flush=True)
    print(
        json.dumps(
            {
                "bench": "packed_conv_total",
                **base,
                "ms": {form: round(v, 2) for form, v in totals.items() if form != "window"},
                "chosen_ms": round(chosen_total, 2),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
