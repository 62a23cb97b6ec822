"""Celery worker entry point: `celery -A worker.app worker`.

Tasks are thin: the message carries only the job id; the runner re-reads the job row.

Jobs at once: LETHE_WORKER_CONCURRENCY prefork pool processes, unless --concurrency says otherwise. Several
can share one GPU: each pool process imports PyTorch and creates its own CUDA context after the fork, and
this parent process never imports PyTorch (CUDA initialised before a fork is unusable in the children).

Queues: every declared queue, forget requests' first (core/queue.py), unless --queues says otherwise.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import (
    after_setup_logger,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from core.db import reset_engine
from core.logs import use_json_logs
from core.queue import RUN_JOB, get_celery
from core.settings import get_settings
from worker import shutdown
from worker.pool import PoolWatch, pool_processes
from worker.threads import note_jobs_at_once
from worker.webhooks import DeliveryLoop

app = get_celery()
app.conf.worker_concurrency = get_settings().worker_concurrency
log = logging.getLogger(__name__)
_pool: list[Any] = []
"""The main process's task pool, once the worker is ready."""
_deliveries = DeliveryLoop()


def _import_handlers() -> None:
    """PyTorch and the handlers take seconds to import (most of a minute on a loaded machine)."""
    try:
        import worker.runner  # noqa: F401
    except Exception:  # the task's own import raises it again, with the job to fail
        log.exception("importing the job handlers failed")


@worker_process_init.connect
def _init_child(**_kw: Any) -> None:
    """A forked pool process must not share the parent's database connections.

    The handlers (and PyTorch) are imported in a thread, so the process reports ready to Celery at once:
    Celery kills a new pool process that is silent for worker_proc_alive_timeout, and one that imported
    PyTorch first was killed over and over on a loaded machine. A job that arrives meanwhile waits for
    the import to finish.
    """
    reset_engine()
    shutdown.listen_in_pool_process()
    threading.Thread(target=_import_handlers, daemon=True, name="lethe-import").start()


@worker_ready.connect
def _watch_pool(sender: Any = None, **_kw: Any) -> None:
    """In the main process: end the worker if its pool cannot keep its processes up."""
    task_pool = getattr(sender, "pool", None)
    if task_pool is None or not pool_processes(task_pool):
        return
    _pool[:] = [task_pool]
    size = len(pool_processes(task_pool))
    controller = getattr(sender, "controller", None)
    PoolWatch(task_pool, size, get_settings().worker_pool_down_seconds, controller).start()


@worker_ready.connect
def _start_deliveries(**_kw: Any) -> None:
    """Webhook deliveries go out from the main process, beside the pool, never queued behind a job; from every
    worker unless LETHE_WEBHOOK_SENDER is false (any one worker that sends is enough: each delivery is leased)."""
    if not get_settings().webhook_sender:
        log.info("webhook deliveries are left to other workers (LETHE_WEBHOOK_SENDER=false)")
        return
    _deliveries.start()


@worker_shutdown.connect
def _stop_deliveries(**_kw: Any) -> None:
    _deliveries.stop()


@worker_init.connect
def _note_jobs_at_once(sender: Any = None, **_kw: Any) -> None:
    """In the main process, before the pool forks: how many jobs run at once, for the pool's torch threads."""
    note_jobs_at_once(getattr(sender, "concurrency", None))


@worker_init.connect
def _serve_metrics(**_kw: Any) -> None:
    """A worker host without an API still shows its job metrics to Prometheus, when a port is set."""
    port = get_settings().worker_metrics_port
    if port:
        from core.jobmetrics import serve_worker_metrics

        serve_worker_metrics(port)


@worker_shutting_down.connect
def _hand_back_jobs(how: str = "", **_kw: Any) -> None:
    """In the main process: a shutdown asks the pool's running jobs to stop and requeue themselves."""
    for task_pool in _pool:
        shutdown.tell_pool_processes(p.pid for p in pool_processes(task_pool) if p.pid)
    if how == "Warm":
        shutdown.cold_after(get_settings().worker_stop_seconds)


@after_setup_logger.connect
def _json_logs(logger: logging.Logger, **_kw: Any) -> None:
    if get_settings().log_json:
        use_json_logs(logger)


@app.task(name=RUN_JOB, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str | None:
    from worker.runner import run_job as run  # imported here: torch loads in the pool process, not the parent

    return run(job_id)
