"""The Celery application shared by the API (publishing) and workers (consuming).

Celery is only transport: the message carries the job id, json only; the database holds
the job's state. No result backend.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from core.settings import get_settings

RUN_JOB = "lethe.run_job"


def _transport_options(broker: str) -> dict[str, object]:
    """Redis redelivers unacknowledged messages after visibility_timeout: keep it above any job's run time.

    kombu's SQLAlchemy transport passes its options to create_engine, so it gets engine options only.
    """
    if broker.startswith("sqla+"):
        return {"connect_args": {"timeout": 30}}
    return {"visibility_timeout": 6 * 3600}


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    if settings.broker.startswith("sqla+sqlite"):
        settings.ensure_dirs()
    app = Celery("lethe", broker=settings.broker)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_create_missing_queues=False,
        task_queues=None,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.broker),
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    from kombu import Queue

    app.conf.task_queues = [Queue(settings.queue)]
    return app


def publish_job(job_id: str) -> None:
    """Send the job id to the workers; the task id is the job id."""
    get_celery().send_task(RUN_JOB, args=[job_id], task_id=job_id, queue=get_settings().queue)


def broker_ok(timeout: float = 2.0) -> bool:
    """True when the broker accepts a connection within the timeout."""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
