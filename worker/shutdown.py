"""A worker told to stop hands its running jobs back to the queue instead of finishing them.

Celery's warm shutdown (SIGTERM to the worker's main process: `lethe up` stopping, `docker stop`) waits for
running jobs, which may take hours. The main process relays the shutdown to its pool processes with
STOP_SIGNAL; a job there stops at its next training step and is requeued, so the worker exits within
seconds and the next worker runs the job again from the start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable

STOP_SIGNAL = signal.SIGUSR2
"""Unused by Celery and billiard in pool processes (SIGUSR1 is the soft time limit, SIGTERM kills)."""

_stopping = threading.Event()


def stopping() -> bool:
    """True in a pool process once its worker began to shut down."""
    return _stopping.is_set()


def listen_in_pool_process() -> None:
    """Called as a pool process starts: STOP_SIGNAL marks it stopping."""
    signal.signal(STOP_SIGNAL, lambda *_: _stopping.set())


def tell_pool_processes(pids: Iterable[int]) -> None:
    """From the main process: ask each pool process to hand its job back."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNAL)
