"""Celery worker entry point: `celery -A worker.app worker`.

Tasks are thin: the message carries only the job id; the runner re-reads the job row.

Jobs at once: LETHE_WORKER_CONCURRENCY prefork pool processes, unless --concurrency says otherwise. Several
can share one GPU: each pool process imports PyTorch and creates its own CUDA context after the fork, and
this parent process never imports PyTorch (CUDA initialised before a fork is unusable in the children).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import after_setup_logger, worker_init, worker_process_init, worker_ready, worker_shutdown

from core.db import reset_engine
from core.logs import use_json_logs
from core.queue import RUN_JOB, get_celery
from core.settings import get_settings
from worker.webhooks import DeliveryLoop

app = get_celery()
app.conf.worker_concurrency = get_settings().worker_concurrency
log = logging.getLogger(__name__)
_deliveries = DeliveryLoop()


@worker_process_init.connect
def _init_child(**_kw: Any) -> None:
    """A forked pool process must not share the parent's database connections."""
    reset_engine()
    # Import PyTorch and the handlers now, not when the first job arrives: a message the pool holds
    # while importing for many seconds would look lost to the sweeper and be published twice.
    import worker.runner  # noqa: F401

    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)


@worker_ready.connect
def _start_deliveries(**_kw: Any) -> None:
    """Webhook deliveries go out from the main process, beside the pool, never queued behind a job."""
    _deliveries.start()


@worker_shutdown.connect
def _stop_deliveries(**_kw: Any) -> None:
    _deliveries.stop()


@worker_init.connect
def _serve_metrics(**_kw: Any) -> None:
    """A worker host without an API still shows its job metrics to Prometheus, when a port is set."""
    port = get_settings().worker_metrics_port
    if port:
        from core.jobmetrics import serve_worker_metrics

        serve_worker_metrics(port)


@after_setup_logger.connect
def _json_logs(logger: logging.Logger, **_kw: Any) -> None:
    if get_settings().log_json:
        use_json_logs(logger)


@app.task(name=RUN_JOB, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str | None:
    from worker.runner import run_job as run  # imported here: torch loads in the pool process, not the parent

    return run(job_id)
