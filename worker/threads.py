"""How many torch CPU threads a worker's pool process uses: a module the worker's main process may import
(it never imports PyTorch; worker.app)."""

from __future__ import annotations

import os

JOBS_AT_ONCE = [1]
"""Jobs this worker runs at once, set by its main process before the pool forks (worker.app)."""


def pool_threads(setting: int, default: int, jobs_at_once: int) -> int:
    """torch CPU threads for one pool process: LETHE_TORCH_THREADS when set, else torch's default (one per
    core) shared among the jobs the worker runs at once, at least 1. Pool processes that together ask for
    more threads than there are cores slow each other down many times over: OpenMP's threads wait for one
    another at every operation (docs/operations.md)."""
    if setting:
        return setting
    return max(1, default // max(1, jobs_at_once))


def note_jobs_at_once(concurrency: object) -> None:
    """Record the worker's concurrency as Celery holds it: a count, the same as a string, or 0 for one per
    CPU; anything else leaves the default."""
    try:
        jobs = int(concurrency)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return
    JOBS_AT_ONCE[0] = jobs if jobs > 0 else max(1, os.cpu_count() or 1)
