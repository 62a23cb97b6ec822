"""The worker's main process watches its prefork pool: a pool that cannot start processes ends the worker.

Celery replaces a pool process that dies, and kills a new one that does not report ready within
`worker_proc_alive_timeout` (LETHE_WORKER_START_SECONDS). If new ones keep failing, the main process would
live on with nothing to run jobs in, and no supervisor would notice. So when the pool has lacked a ready
process for LETHE_WORKER_POOL_DOWN_SECONDS, the worker shuts down cold with exit code 1, for its
supervisor (`lethe up`, compose's `restart:`) to start a fresh one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
FORCE_AFTER_S = 30.0
"""After asking Celery for a cold shutdown, exit anyway if it has not happened this much later."""


def pool_processes(task_pool: Any) -> list[Any]:
    """The prefork pool's processes (billiard Process objects); none for other pools."""
    return list(getattr(getattr(task_pool, "_pool", None), "_pool", None) or [])


def ready_count(task_pool: Any) -> int:
    """Pool processes that are alive and have reported ready to take jobs."""
    waiting = set(getattr(getattr(task_pool, "_pool", None), "_waiting_to_start", None) or ())
    # The return code as billiard last saw it: polling here would reap children behind the pool's back.
    return sum(
        1
        for p in pool_processes(task_pool)
        if getattr(p._popen, "returncode", None) is None and p not in waiting
    )


class PoolWatch:
    """A daemon thread in the main process that ends the worker when its pool stays short of processes."""

    def __init__(self, task_pool: Any, size: int, limit_s: float, controller: Any = None) -> None:
        self.task_pool, self.size, self.limit_s = task_pool, size, limit_s
        self.controller = controller
        """Celery's WorkController, whose exitcode the `celery worker` command exits with."""
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lethe-pool-watch")

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        short_since: float | None = None
        while True:
            time.sleep(CHECK_EVERY_S)
            try:
                ready = ready_count(self.task_pool)
            except Exception:  # the pool's lists changed while read: look again next round
                continue
            if ready >= self.size:
                short_since = None
                continue
            now = time.monotonic()
            short_since = short_since or now
            if now - short_since >= self.limit_s:
                self._exit(ready)
                return

    def _exit(self, ready: int) -> None:
        log.error(
            "the pool has had %d of %d processes ready for %.0f s (LETHE_WORKER_POOL_DOWN_SECONDS): "
            "exiting with code 1 so that the supervisor starts a fresh worker",
            ready,
            self.size,
            self.limit_s,
        )
        if self.controller is not None:
            self.controller.exitcode = 1  # a cold shutdown by itself exits with 0
        os.kill(os.getpid(), signal.SIGQUIT)  # Celery's cold shutdown
        time.sleep(FORCE_AFTER_S)
        os._exit(1)
