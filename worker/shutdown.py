"""A worker told to stop hands its running jobs back to the queue instead of finishing them.

Celery's warm shutdown (SIGTERM to the worker's main process: `lethe up` stopping, `docker stop`) waits for
running jobs, which may take hours. The main process relays the shutdown to its pool processes with
STOP_SIGNAL; a job there stops at its next training step and is requeued, so the worker exits within
seconds and the next worker runs the job again from the start. A warm shutdown that takes longer than
LETHE_WORKER_STOP_SECONDS turns cold.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable

STOP_SIGNAL = signal.SIGRTMIN + 1
"""A real-time signal: billiard points SIGTERM, SIGUSR1, SIGUSR2 and the other classic ones at its own
handlers in pool processes (after worker_process_init), and leaves these alone."""

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


def cold_after(seconds: float) -> None:
    """From the main process, as a warm shutdown begins: if it is not over in time, shut down cold.

    A job that does not check its stop flag (scoring, logits) would otherwise keep the worker alive for as
    long as it runs. Whatever it leaves running is requeued by the sweep, or by the next `lethe up`.
    """

    def later() -> None:
        time.sleep(seconds)
        os.kill(os.getpid(), signal.SIGQUIT)  # Celery's cold shutdown
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=later, daemon=True, name="lethe-shutdown-deadline").start()
