"""Prometheus metrics: job counters and histograms kept as jobs change state (core/jobmetrics.py, added up
over this host's processes in multiprocess mode), jobs by kind and status and worker heartbeats (read from
the database at scrape time: they are states, not counts) and request latency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import jobmetrics
from core.db import session_scope
from core.tables import Job, JobStatus, utcnow

REGISTRY = CollectorRegistry()
REQUEST_SECONDS = Histogram(
    "lethe_http_request_duration_seconds",
    "HTTP request latency of this API process",
    ["method", "route", "status"],
    registry=None if jobmetrics.multiprocess() else REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


class JobCollector(Collector):
    """What is true now, from the database: how many jobs are in each state, how stale each busy worker is."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
            for worker, last in session.execute(
                select(Job.worker, func.max(Job.heartbeat_at))
                .where(Job.status == JobStatus.running, Job.worker.is_not(None))
                .group_by(Job.worker)
            ):
                if last is not None:
                    beats.add_metric([worker], (now - _aware(last)).total_seconds())
        yield jobs
        yield beats


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


REGISTRY.register(JobCollector())
if not jobmetrics.multiprocess():
    jobmetrics.collectors(REGISTRY)


def _registry() -> CollectorRegistry:
    """In multiprocess mode a fresh registry per scrape reads every process's files (the documented way)."""
    if not jobmetrics.multiprocess():
        return REGISTRY
    registry = jobmetrics.collectors(CollectorRegistry())
    registry.register(JobCollector())
    return registry


router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics() -> Response:
    """Prometheus text format: jobs queued, started and finished by kind and outcome, their durations and queue waits, jobs by status, worker heartbeat ages, request latency. Needs no API key."""
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


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
