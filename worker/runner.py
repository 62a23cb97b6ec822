"""Run one job by id: claim it, dispatch to its kind's handler, record the outcome."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery.exceptions import SoftTimeLimitExceeded

from core import jobs
from core.db import session_scope
from core.logs import current_job
from core.services import publish_jobs
from core.settings import get_settings
from core.tables import FINISHED, JobStatus
from ml.allocator import keep_freed_memory
from ml.errors import Cancelled
from worker import batch as _batch  # noqa: F401  (registers the forget_batch handler)
from worker import evaluation as _evaluation  # noqa: F401  (registers the run handlers)
from worker import logits as _logits  # noqa: F401  (registers the logits handler)
from worker import shutdown
from worker.context import JobContext
from worker.handlers import HANDLERS
from worker.settle import notify, settle
from worker.threads import JOBS_AT_ONCE, pool_threads

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> str:
    """ "auto" picks CUDA when this process can see a GPU.

    Called in the pool process that runs the job, never in the Celery parent: a parent that initialised
    CUDA before forking its pool would leave the children unable to use it.
    """
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def use_compile(setting: bool, device: str) -> bool:
    """LETHE_TORCH_COMPILE applies on CUDA only: on a CPU the compile time is rarely won back."""
    return setting and device.startswith("cuda")


@lru_cache(maxsize=1)
def _prepare_process() -> None:
    """Once per process, from the thread that runs the jobs: its torch threads (pool_threads), and the C
    library's allocator set to keep a training step's freed buffers for the next (ml.allocator)."""
    keep_freed_memory()
    import torch

    threads = pool_threads(get_settings().torch_threads, torch.get_num_threads(), JOBS_AT_ONCE[0])
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def run_job(job_id: str) -> str | None:
    """Run the job, then settle any fan-out parent waiting for it; its log lines carry its id."""
    token = current_job.set(job_id)
    try:
        _prepare_process()
        status = _run(job_id)
        if status in FINISHED:
            notify(job_id)
        elif status is None:
            settle(job_id)  # a fan-out parent the sweep sent because its runs ended unnoticed: score it
        return status
    finally:
        current_job.reset(token)


def _run(job_id: str) -> str | None:
    """Returns the final status, or None when the job was not ours to run (finished or taken)."""
    if shutdown.stopping():  # taken from the broker as the worker shuts down: left to the next worker
        publish_jobs([job_id])
        return None
    with session_scope() as session:
        job = jobs.claim(session, job_id)
        if job is None:
            log.info("job %s is not queued; skipping", job_id)
            return None
        kind, params = job.kind, dict(job.params)
    handler = HANDLERS.get(kind)
    if handler is None:
        return _fail(job_id, None, f"no handler for job kind {kind!r}")
    settings = get_settings()
    device = resolve_device(settings.device)
    ctx = JobContext(job_id, kind, params, device, torch_compile=use_compile(settings.torch_compile, device))
    try:
        with ctx:
            outcome = handler.run(ctx)
    except Cancelled:
        if ctx.handing_back:
            return _hand_back(job_id)
        with session_scope() as session:
            jobs.finish_unsuccessfully(session, job_id, JobStatus.cancelled, "cancelled on request")
        _after_failure(job_id, handler, "cancelled")
        return JobStatus.cancelled
    except SoftTimeLimitExceeded:
        log.error("job %s ran past its time limit", job_id)
        return _fail(job_id, handler, f"time limit exceeded: stopped at the soft time limit of a {kind} job")
    except Exception as exc:
        log.exception("job %s failed", job_id)
        return _fail(job_id, handler, f"{type(exc).__name__}: {exc}")
    with session_scope() as session:
        if jobs.succeed(session, job_id, result=outcome.result, metrics=outcome.metrics) and outcome.apply:
            outcome.apply(session)
    return JobStatus.succeeded


def _hand_back(job_id: str) -> str:
    """The worker is shutting down: the job goes back to the queue for the next worker to run."""
    with session_scope() as session:
        jobs.requeue(session, job_id, "its worker shut down")
    publish_jobs([job_id])
    log.info("job %s handed back to the queue: the worker is shutting down", job_id)
    return JobStatus.queued


def _fail(job_id: str, handler: object, reason: str) -> str:
    with session_scope() as session:
        jobs.finish_unsuccessfully(session, job_id, JobStatus.failed, reason)
    _after_failure(job_id, handler, reason)
    return JobStatus.failed


def _after_failure(job_id: str, handler: object, reason: str) -> None:
    on_failure = getattr(handler, "on_failure", None)
    if on_failure is None:
        return
    with session_scope() as session:
        on_failure(session, jobs.get_job(session, job_id), reason)
