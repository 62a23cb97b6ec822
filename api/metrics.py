"""Prometheus metrics: job counts, durations and queue waits, worker heartbeats (read from the database at
scrape time, so every API process reports the same truth) and this process's request latency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.db import session_scope
from core.tables import FINISHED, Job, JobStatus, utcnow

BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
RECENT = 10_000
"""Finished jobs the duration and queue-wait histograms are built from (the most recent ones)."""

REGISTRY = CollectorRegistry()
REQUEST_SECONDS = Histogram(
    "lethe_http_request_duration_seconds",
    "HTTP request latency of this API process",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


def _histogram(name: str, doc: str, values: list[float]) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= b) for b in BUCKETS]
    buckets = [(str(b), c) for b, c in zip(BUCKETS, counts, strict=True)] + [("+Inf", len(values))]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(values)))


class JobCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        jobs = GaugeMetricFamily("lethe_jobs", "Jobs by kind and status", labels=["kind", "status"])
        beats = GaugeMetricFamily(
            "lethe_worker_heartbeat_age_seconds",
            "Seconds since each busy worker's last heartbeat",
            labels=["worker"],
        )
        now = utcnow()
        with session_scope() as session:
            for kind, status, n in session.execute(
                select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
            ):
                jobs.add_metric([kind, status], n)
            finished = session.execute(
                select(Job.created_at, Job.started_at, Job.finished_at)
                .where(Job.status.in_(FINISHED), Job.started_at.is_not(None), Job.finished_at.is_not(None))
                .order_by(Job.finished_at.desc())
                .limit(RECENT)
            ).all()
            for worker, last in session.execute(
                select(Job.worker, func.max(Job.heartbeat_at))
                .where(Job.status == JobStatus.running, Job.worker.is_not(None))
                .group_by(Job.worker)
            ):
                if last is not None:
                    beats.add_metric([worker], (now - _aware(last)).total_seconds())
        yield jobs
        yield beats
        yield _histogram(
            "lethe_job_duration_seconds",
            "Run time of recently finished jobs",
            [(_aware(f) - _aware(s)).total_seconds() for _c, s, f in finished],
        )
        yield _histogram(
            "lethe_job_queue_wait_seconds",
            "Time from queued to running of recently finished jobs",
            [(_aware(s) - _aware(c)).total_seconds() for c, s, _f in finished],
        )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


REGISTRY.register(JobCollector())

router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics() -> Response:
    """Prometheus text format: jobs by kind and status, job durations and queue waits, worker heartbeat ages, request latency. Needs no API key."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestTimer:
    """Times every request by its route template (not its raw path, which would explode the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], path, str(status["code"])).observe(
                time.perf_counter() - start
            )
