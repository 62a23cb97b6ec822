"""Job metrics as Prometheus counters and histograms, moved in whichever process changes a job's state.

Every job state change writes an audit event (core/jobs.py); this module watches those events as their
session flushes and updates the metrics once the transaction commits, so a rolled-back change counts for
nothing and the figures never go down when job rows are deleted. API processes and the worker's pool
processes are separate: with PROMETHEUS_MULTIPROC_DIR set, each writes its figures to files in that
folder, and any process of the host (the API's /metrics, a worker's metrics port) adds them up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from core.tables import AuditEvent, Job

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # prometheus_client writes its per-process files there from the first sample on; it must exist.
    Path(os.environ[MULTIPROC_ENV]).mkdir(parents=True, exist_ok=True)

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

log = logging.getLogger(__name__)

BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
PENDING = "lethe_job_metrics"
"""Key in Session.info of the observations waiting for their transaction to commit."""

QUEUED = Counter("lethe_jobs_queued", "Jobs submitted, by kind", ["kind"], registry=None)
REQUEUED = Counter(
    "lethe_jobs_requeued", "Jobs put back in the queue after their worker was lost", ["kind"], registry=None
)
STARTED = Counter(
    "lethe_jobs_started", "Job runs started by a worker (each attempt counts)", ["kind"], registry=None
)
FINISHED = Counter(
    "lethe_jobs_finished", "Jobs finished, by kind and outcome", ["kind", "outcome"], registry=None
)
DURATION = Histogram(
    "lethe_job_duration_seconds",
    "Run time of finished jobs, from their last start to their end",
    ["kind", "outcome"],
    buckets=BUCKETS,
    registry=None,
)
QUEUE_WAIT = Histogram(
    "lethe_job_queue_wait_seconds",
    "Time from submission to a job's first start",
    ["kind"],
    buckets=BUCKETS,
    registry=None,
)
METRICS = (QUEUED, REQUEUED, STARTED, FINISHED, DURATION, QUEUE_WAIT)


@dataclass(frozen=True)
class Moved:
    """One committed-to-be state change, with what its metrics need from the job row."""

    event: str
    detail: dict[str, Any]
    kind: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (_aware(end) - _aware(start)).total_seconds())


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _queued(m: Moved) -> None:
    QUEUED.labels(m.kind).inc()


def _requeued(m: Moved) -> None:
    REQUEUED.labels(m.kind).inc()


def _started(m: Moved) -> None:
    STARTED.labels(m.kind).inc()
    wait = _seconds(m.created_at, m.started_at)
    if m.detail.get("attempt", 1) == 1 and wait is not None:
        QUEUE_WAIT.labels(m.kind).observe(wait)


def _finished(m: Moved) -> None:
    FINISHED.labels(m.kind, m.event).inc()
    ran = _seconds(m.started_at, m.finished_at)
    if ran is not None:
        DURATION.labels(m.kind, m.event).observe(ran)


ON_EVENT: dict[str, Callable[[Moved], None]] = {
    "queued": _queued,
    "requeued": _requeued,
    "running": _started,
    "succeeded": _finished,
    "failed": _finished,
    "cancelled": _finished,
}
"""Job audit event -> the metrics it moves; other events (cancel_requested) move none."""


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context: Any) -> None:
    """Note the job state changes this flush wrote, with the job's kind and times read in the same transaction."""
    events = [
        o for o in session.new if isinstance(o, AuditEvent) and o.object_type == "job" and o.event in ON_EVENT
    ]
    if not events:
        return
    pending = session.info.setdefault(PENDING, [])
    # A `queued` event names its kind, the only label its counter needs: no read for a job just created.
    unknown = []
    for e in events:
        if e.event == "queued" and (e.detail or {}).get("kind"):
            pending.append(Moved(e.event, e.detail, e.detail["kind"], None, None, None))
        else:
            unknown.append(e)
    events = unknown
    if not events:
        return
    ids = {e.object_id for e in events}
    rows = {
        r.id: r
        for r in session.connection().execute(
            select(Job.id, Job.kind, Job.created_at, Job.started_at, Job.finished_at).where(Job.id.in_(ids))
        )
    }
    for e in events:
        row = rows.get(e.object_id)
        if row is not None:
            pending.append(
                Moved(e.event, e.detail or {}, row.kind, row.created_at, row.started_at, row.finished_at)
            )


@event.listens_for(Session, "after_commit")
def _publish(session: Session) -> None:
    for moved in session.info.pop(PENDING, []):
        ON_EVENT[moved.event](moved)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(PENDING, None)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """Add the job metrics to a registry: every process's files in multiprocess mode, else this process's."""
    if multiprocess():
        MultiProcessCollector(registry)
    else:
        for metric in METRICS:
            registry.register(metric)
    return registry


def serve_worker_metrics(port: int) -> None:
    """Serve the job metrics of this host's pool processes on a port (a worker host without an API)."""
    if not multiprocess():
        raise RuntimeError(
            f"LETHE_WORKER_METRICS_PORT={port} needs {MULTIPROC_ENV}: jobs run in pool processes, "
            "which hand their metrics to this one through files in that folder"
        )
    start_http_server(port, registry=collectors(CollectorRegistry()))
    log.info("job metrics on port %d", port)
