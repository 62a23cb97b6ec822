"""`lethe worker`: this host's Celery workers, on the queues of the roles asked for, one per GPU with --gpus.

Without --gpus the command becomes the Celery worker itself (exec), so SIGTERM reaches Celery directly and
starts its warm shutdown, as compose's `docker compose stop` does. With --gpus each GPU gets a worker process
of its own that sees only that GPU (CUDA_VISIBLE_DEVICES, so its PyTorch calls it cuda:0), under its own
Celery node name; this process keeps them running and stops them all on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import typer

GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z-]+)$")
"""What CUDA_VISIBLE_DEVICES accepts for one device: an index, or a GPU or MIG instance UUID."""


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process to start: its command line and its whole environment."""

    cmd: list[str]
    env: dict[str, str]
    gpu: str | None = None


def parse_gpus(spec: str) -> list[str]:
    """`0,1` -> ["0", "1"]; an id CUDA would not take, or one named twice, is refused."""
    ids = [g.strip() for g in spec.split(",")]
    if not spec.strip() or any(not GPU_ID.match(g) for g in ids):
        raise ValueError(f"--gpus takes GPU indices or UUIDs separated by commas (e.g. 0,1), got {spec!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus names a GPU twice: {spec!r}")
    return ids


def worker_specs(
    queues: str, gpus: str, concurrency: int | None, environ: Mapping[str, str]
) -> list[WorkerSpec]:
    """The worker processes `lethe worker` starts: one, or one per GPU; raises ValueError on bad options."""
    from cli.main import worker_command
    from core.queue import parse_roles, worker_queues
    from core.settings import get_settings

    names = worker_queues(parse_roles(queues))
    cmd = worker_command(concurrency, queues=names)
    if not gpus:
        return [WorkerSpec(cmd, dict(environ))]
    ids = parse_gpus(gpus)
    if get_settings().device == "cpu":
        raise ValueError(
            "--gpus with LETHE_DEVICE=cpu: unset LETHE_DEVICE (or set it to cuda) to use the GPUs"
        )
    specs = []
    for i, gpu in enumerate(ids):
        env = dict(environ)
        # The process sees one GPU, as cuda:0; "cuda" rather than "auto", so a missing GPU fails its jobs
        # loudly instead of running them on the CPU.
        env.update({"CUDA_VISIBLE_DEVICES": gpu, "LETHE_DEVICE": "cuda"})
        if i > 0:
            env["LETHE_WORKER_METRICS_PORT"] = "0"  # the first serves the host's metrics folder for all
        specs.append(WorkerSpec([*cmd, "--hostname", f"gpu{gpu}@{socket.gethostname()}"], env, gpu))
    return specs


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def supervise(specs: list[WorkerSpec], stop_seconds: float) -> None:
    """Keep every worker running (a crashed one is started again) until SIGTERM or Ctrl-C, then stop them all."""
    from cli.main import _Supervisor

    supervisors = [_Supervisor(s.cmd, stop_seconds, s.env) for s in specs]
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        for spec, sup in zip(specs, supervisors, strict=True):
            sup.start()
            queues = spec.cmd[spec.cmd.index("--queues") + 1]
            typer.echo(
                f"lethe: worker for GPU {spec.gpu} started (pid {sup.proc.pid}, queues {queues})", err=True
            )
        while True:
            time.sleep(1.0)
    finally:
        for sup in supervisors:
            sup.stopping.set()  # all of them hand their jobs back at once, not one after the other
        for sup in supervisors:
            sup.stop()
        typer.echo("lethe: workers stopped", err=True)


def run_workers(queues: str, gpus: str, concurrency: int | None) -> None:
    """`lethe worker`: bad options are refused (exit code 2) before anything starts."""
    from core.settings import get_settings

    try:
        specs = worker_specs(queues, gpus, concurrency, os.environ)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not gpus:
        os.execvpe(specs[0].cmd[0], specs[0].cmd, specs[0].env)
    supervise(specs, get_settings().worker_stop_seconds)
