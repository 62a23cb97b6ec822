"""The Celery application shared by the API (publishing) and workers (consuming).

Celery is only transport: the message carries the job id, json only; the database holds
the job's state. No result backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from queue import Empty, SimpleQueue
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.exceptions import ChannelError
from kombu.utils.scheduling import FairCycle

from core.settings import get_settings

log = logging.getLogger(__name__)

RUN_JOB = "lethe.run_job"


FORGET_KINDS = frozenset({"unlearn", "forget_batch"})
"""Job kinds that answer deletion requests: they run on their own queue, ahead of research work."""
EVALUATE_KINDS = frozenset({"evaluate", "reference", "study", "reference_run", "unlearn_run"})
"""Research fan-out (evaluations, reference sets, studies and their runs): bulk work, on a queue of its own."""

ROLES = ("forget", "train", "evaluate")
"""What a worker can be given (`lethe worker --queues`), in the order a worker serving several takes from
them: forget requests first, then training (and any other kind), then the research fan-out."""


def role_of(kind: str | None) -> str:
    """The role whose queue a job kind goes to; a kind named nowhere goes with training."""
    if kind in FORGET_KINDS:
        return "forget"
    if kind in EVALUATE_KINDS:
        return "evaluate"
    return "train"


def queue_name(role: str, base: str | None = None) -> str:
    """`<LETHE_QUEUE>.forget`, `<LETHE_QUEUE>.evaluate`, and LETHE_QUEUE itself for training."""
    if role not in ROLES:
        raise ValueError(f"unknown queue role {role!r}; valid: {', '.join(ROLES)}")
    base = base or get_settings().queue
    return base if role == "train" else f"{base}.{role}"


def queue_for(kind: str | None) -> str:
    """The queue a job kind is published to (role_of)."""
    return queue_name(role_of(kind))


def parse_roles(spec: str) -> tuple[str, ...]:
    """`forget,evaluate` -> the roles, in priority order; empty means every role. Unknown names are refused."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown queue role(s) {', '.join(unknown)}; valid: {', '.join(ROLES)}")
    if len(names) != len(set(names)):
        raise ValueError(f"queue roles are named twice in {spec!r}")
    return tuple(r for r in ROLES if r in names) if names else ROLES


def worker_queues(roles: tuple[str, ...] = ROLES) -> list[str]:
    """The queues of these roles (default: all), in the order workers take from them: forget requests first."""
    return [queue_name(r) for r in ROLES if r in roles]


def _transport_options(broker: str) -> dict[str, object]:
    """Redis redelivers unacknowledged messages after visibility_timeout: keep it above any job's run time.

    Redis is asked for the queues in the order the worker consumes them, never round-robin, so a forget
    request waits at most for the job already running. kombu's SQLAlchemy transport passes its options to
    create_engine, so it gets engine options only (its queue order is set in _tune_embedded_broker).
    """
    if broker.startswith("sqla+"):
        return {"connect_args": {"timeout": 30}}
    return {"visibility_timeout": VISIBILITY_TIMEOUT, "queue_order_strategy": "priority"}


class _InOrder(FairCycle):
    """kombu's virtual transports poll their queues round-robin; this polls them in order every time."""

    def get(self, callback: Any, **kwargs: Any) -> Any:
        self.pos = 0
        return super().get(callback, **kwargs)


def _in_order_cycle(channel: Any) -> None:
    channel._cycle = _InOrder(channel._get_and_deliver, channel._active_queues, Empty)


def _tune_embedded_broker(seconds: float) -> None:
    """kombu's SQLAlchemy transport checks for messages once a second, its virtual transports' default,
    which a job waits half of on average before it starts, and it takes from its queues in turn. Neither
    can come through broker_transport_options (that transport hands every option to create_engine), so
    both are set on its classes: one process talks to one broker."""
    from kombu.transport import sqlalchemy

    sqlalchemy.Transport.polling_interval = seconds
    sqlalchemy.Channel._reset_cycle = _in_order_cycle


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    if settings.broker.startswith("sqla+"):
        _tune_embedded_broker(settings.broker_poll_seconds)
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
        worker_proc_alive_timeout=settings.worker_start_seconds,
        enable_utc=True,
        # Task events let Flower show tasks; the embedded SQLite broker has no fanout to carry them.
        worker_send_task_events=not settings.broker.startswith("sqla+"),
        task_send_sent_event=not settings.broker.startswith("sqla+"),
    )
    app.conf.task_queues = [Queue(name) for name in worker_queues()]
    return app


TIME_LIMITS: dict[str, int] = {
    "train": 24 * 3600,
    "reference_run": 24 * 3600,
    "unlearn": 6 * 3600,
    "unlearn_run": 24 * 3600,  # a pack of up to 32 runs, as a reference pack
    "forget_batch": 6 * 3600,
}
"""Hard time limit of each job kind, in seconds; the soft limit (a clean failure) comes a minute earlier."""
DEFAULT_TIME_LIMIT = 6 * 3600
VISIBILITY_TIMEOUT = max(TIME_LIMITS.values()) + 3600
"""Redis redelivers an unacknowledged message after this: above every hard limit, or a job would run twice."""


def publish_job(job_id: str, kind: str | None = None, producer: Any = None) -> None:
    """Send the job id to the workers; the task id is the job id, with the kind's time limits.

    `producer`: one already acquired (Celery's producer pool), whose batch the message may join."""
    hard = TIME_LIMITS.get(kind or "", DEFAULT_TIME_LIMIT)
    get_celery().send_task(
        RUN_JOB,
        args=[job_id],
        task_id=job_id,
        queue=queue_for(kind),
        soft_time_limit=hard - 60,
        time_limit=hard,
        producer=producer,
    )


PUBLISH_BATCH = 256
"""The most messages one trip to the broker carries (each with its task-sent event)."""
PUBLISH_WAIT_S = 30.0
"""How long publish_async waits for its message to go out; past it the job is left to the sweep."""


class Dispatcher:
    """Publishes job ids handed over by the event loop from one thread of the process, in batches.

    A request adds its job to a queue (no thread hop of its own), and the thread sends whatever has
    gathered meanwhile through one producer from Celery's pool, in one pipeline of broker commands
    (kombu's Producer.batch): the messages and their task-sent events for Flower, as send_task writes them.
    A batch that fails (a connection gone stale when Redis restarted) is sent again one message at a time,
    through send_task's own retries; a message that still fails leaves its job and the rest of the batch
    queued, for the maintenance sweep to publish again (core.maintenance.lost_messages), as before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: SimpleQueue[tuple[str, str | None, Callable[[], None]]] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, job_id: str, kind: str | None, done: Callable[[], None]) -> None:
        """Publish the job soon; `done` is called from the dispatcher's thread once it was tried."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            self._start()
        self._queue.put((job_id, kind, done))

    async def publish_async(self, job_id: str, kind: str | None) -> None:
        """Publish the job and wait (on the event loop, costing it nothing meanwhile) until it was tried."""
        loop = asyncio.get_running_loop()
        sent = loop.create_future()
        self.submit(job_id, kind, lambda: loop.call_soon_threadsafe(_resolve, sent))
        try:
            await asyncio.wait_for(sent, PUBLISH_WAIT_S)
        except TimeoutError:
            log.warning(
                "publishing job %s took over %gs; the sweep publishes it if it was lost",
                job_id,
                PUBLISH_WAIT_S,
            )

    def _start(self) -> None:
        with self._lock:
            thread = self._thread
            if thread is not None and self._pid == os.getpid() and thread.is_alive():
                return
            if self._pid != os.getpid():
                self._queue = SimpleQueue()  # a forked child: what the parent had queued is the parent's
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="lethe-publish", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        queue = self._queue
        while True:
            batch = [queue.get()]
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(queue.get_nowait())
                except Empty:
                    break
            try:
                send_batch([(job_id, kind) for job_id, kind, _ in batch])
            except Exception:  # the app itself could not be built: the sweep publishes them later
                log.exception("publishing %d jobs failed; they stay queued", len(batch))
            for *_, done in batch:
                with contextlib.suppress(RuntimeError):  # the waiting event loop has closed: nobody waits
                    done()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _batch(producer: Any) -> contextlib.AbstractContextManager[Any]:
    """kombu's Producer.batch (kombu 5.7) where there is one; before it, each message goes on its own, still
    through the one producer."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=2 * PUBLISH_BATCH) if batch is not None else contextlib.nullcontext()


def send_batch(jobs: list[tuple[str, str | None]]) -> None:
    """Publish jobs through one producer in one pipeline; on failure one at a time, until one fails too."""
    app = get_celery()
    try:
        with app.producer_or_acquire() as producer, _batch(producer):
            for job_id, kind in jobs:
                publish_job(job_id, kind, producer)
        return
    except Exception:
        log.warning(
            "publishing %d jobs together failed; publishing them one by one", len(jobs), exc_info=True
        )
    for i, (job_id, kind) in enumerate(jobs):
        try:
            publish_job(job_id, kind)  # with send_task's own retries, reconnecting if need be
        except Exception:
            # The broker is away: trying the rest would hold the dispatcher up for as long again each.
            log.exception(
                "publishing job %s failed; it and the %d after it stay queued for the sweep",
                job_id,
                len(jobs) - i - 1,
            )
            return


DISPATCHER = Dispatcher()
"""The process's dispatcher (its thread starts with the first job handed to it)."""


def queue_length() -> int:
    """Messages waiting in the job queues (not counting those a worker holds)."""
    total = 0
    with get_celery().connection_for_write() as conn:
        for name in worker_queues():
            try:
                total += int(conn.default_channel.queue_declare(name, passive=True).message_count)
            except (*conn.channel_errors, ChannelError):
                continue  # the queue does not exist (yet, or any more): nothing is waiting in it
    return total


def broker_ok(timeout: float = 2.0) -> bool:
    """True when the broker accepts a connection within the timeout."""
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:
        return False
