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
    return {"visibility_timeout": VISIBILITY_TIMEOUT}


def _poll_embedded_broker_every(seconds: float) -> None:
    """kombu's SQLAlchemy transport checks for messages once a second, its virtual transports' default,
    which a job waits half of on average before it starts. Its polling_interval cannot come through
    broker_transport_options (that transport hands every option to create_engine), so it is set on the
    transport class: one process talks to one broker."""
    from kombu.transport import sqlalchemy

    sqlalchemy.Transport.polling_interval = seconds


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    if settings.broker.startswith("sqla+"):
        _poll_embedded_broker_every(settings.broker_poll_seconds)
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
        # Task events let Flower show tasks; the embedded SQLite broker has no fanout to carry them.
        worker_send_task_events=not settings.broker.startswith("sqla+"),
        task_send_sent_event=not settings.broker.startswith("sqla+"),
    )
    from kombu import Queue

    app.conf.task_queues = [Queue(settings.queue)]
    return app


TIME_LIMITS: dict[str, int] = {
    "train": 24 * 3600,
    "reference_run": 24 * 3600,
    "unlearn": 6 * 3600,
    "unlearn_run": 6 * 3600,
    "forget_batch": 6 * 3600,
}
"""Hard time limit of each job kind, in seconds; the soft limit (a clean failure) comes a minute earlier."""
DEFAULT_TIME_LIMIT = 6 * 3600
VISIBILITY_TIMEOUT = max(TIME_LIMITS.values()) + 3600
"""Redis redelivers an unacknowledged message after this: above every hard limit, or a job would run twice."""


def publish_job(job_id: str, kind: str | None = None) -> None:
    """Send the job id to the workers; the task id is the job id, with the kind's time limits."""
    hard = TIME_LIMITS.get(kind or "", DEFAULT_TIME_LIMIT)
    get_celery().send_task(
        RUN_JOB,
        args=[job_id],
        task_id=job_id,
        queue=get_settings().queue,
        soft_time_limit=hard - 60,
        time_limit=hard,
    )


def queue_length() -> int:
    """Messages waiting in the job queue (not counting those a worker holds)."""
    with get_celery().connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(get_settings().queue, passive=True).message_count)
        except conn.channel_errors:
            return 0  # the queue does not exist (yet, or any more): nothing is waiting in it


def broker_ok(timeout: float = 2.0) -> bool:
    """True when the broker accepts a connection within the timeout."""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
