"""Jobs at once on a CPU worker: how torch's threads per pool process change each job's training step.

Starts --processes processes at once, each set up as a worker's pool process (mlbench.prepare_process) with
--threads torch threads, and each times training steps of a pack of 8 ResNet-18s (width 8, digits-shaped
8x8 inputs, batch 64 per network, SGD with Nesterov momentum) and of one such network: the median step after
a warm-up. One JSON line per process: {"bench": "threads", "processes", "threads", "cores", "process",
"packed_step_ms", "single_step_ms"}. Run it with the worker's share (cores // processes threads each) and
with every core each (torch's default before the worker shared them out), one after the other:

    python benchmarks/bench_threads.py --processes 2 --threads 1
    python benchmarks/bench_threads.py --processes 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_ms(net, k: int, steps: int) -> float:  # type: ignore[no-untyped-def]
    """Median ms of a training step of net on k batches of 64 (k = 0: one network, one batch)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(k, 64, 1, 8, 8) if k else torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64 * max(k, 1),))
    times = []
    for _ in range(steps + 5):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x).reshape(-1, 10), y).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times[5:]) * 1e3, 2)


def child(threads: int, steps: int) -> dict[str, object]:
    import torch
    from mlbench import prepare_process

    from ml.models import build_model
    from ml.packed_net import PackedNet
    from ml.specs import ArchSpec

    process = prepare_process(threads)
    torch.manual_seed(0)
    pack = PackedNet([build_model(ArchSpec(width=8), 10, 1) for _ in range(8)]).train()
    one = build_model(ArchSpec(width=8), 10, 1).train()
    return {**process, "packed_step_ms": step_ms(pack, 8, steps), "single_step_ms": step_ms(one, 0, steps)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=2, help="jobs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each kind")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the processes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.steps)), flush=True)
        return
    from common import die_with_benchmark, exit_on_sigterm

    exit_on_sigterm()
    cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads), "--steps", str(args.steps)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=die_with_benchmark)
        for _ in range(args.processes)
    ]
    deadline = time.monotonic() + args.timeout
    try:
        for i, proc in enumerate(procs):
            try:
                out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                sys.exit(f"bench_threads: the processes ran past --timeout {args.timeout:g} s; stopped")
            line = json.loads(out.strip().splitlines()[-1])
            base = {"bench": "threads", "processes": args.processes, "cores": os.cpu_count(), "process": i}
            print(json.dumps({**base, **line, "loadavg_1m": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        for proc in procs:  # none outlives the benchmark, however it ends
            if proc.poll() is None:
                proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
