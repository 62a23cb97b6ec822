"""The FastAPI application."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.deps import get_tenant
from api.errors import install_error_handlers
from api.fastpath import JobPollFastPath
from api.fastpost import FastPost
from api.limits import BodySizeLimit
from api.metrics import RequestTimer
from api.metrics import router as metrics_router
from api.redact import redact_keys_in_logs
from api.requestid import RequestId
from api.routes import (
    catalog,
    dashboard,
    evaluations,
    events,
    forget_requests,
    intake,
    jobs,
    logits,
    models,
    scores,
    system,
    unlearn,
    webhooks,
)
from api.routes import certificates as certificate_routes
from api.routes import purge as purge_routes
from api.schemas import ERRORS
from core.db import poll_pool_open
from core.logs import use_json_logs
from core.maintenance import Maintainer
from core.settings import get_settings


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Sweep for lost and stalled jobs in the background while the API runs; hold the poll-read pool."""
    redact_keys_in_logs()
    if get_settings().log_json:
        use_json_logs()
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            use_json_logs(logging.getLogger(name))
    interval = get_settings().maintenance_seconds
    maintainer = Maintainer(interval) if interval > 0 else None
    if maintainer:
        maintainer.start()
    try:
        async with poll_pool_open():
            freeze_startup_objects()
            yield
    finally:
        if maintainer:
            maintainer.stop()


_frozen = False
"""Whether this process has frozen its start-up objects (once: a later start, as in tests, does not again)."""


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, the app, settings: some 170,000 objects) out of the garbage collector.

    Python's full collection walks every tracked object; in this process one took about 120 ms, during which no
    request was answered, so at 32 clients POST /unlearn's p99 was that pause (180 ms against 120 ms without it,
    `benchmarks/bench_api.py`). gc.freeze moves the objects alive now to a generation collections skip; they
    live as long as the process anyway. A full collection first, so that no garbage is kept.

    Once per process: objects frozen are never collected, so freezing at every start of an app in one process
    (the test suite starts hundreds) would keep each earlier app's garbage, database pools and their
    connections included, for as long as the next app runs; unfreezing at shutdown did not help, as most of
    that time is spent inside a lifespan."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="Lethe",
        version="0.1.0",
        description="Machine unlearning as a service: forget training samples, measure how well it forgot.",
    )
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(dashboard.router)
    app.include_router(metrics_router)
    for module in (
        models,
        unlearn,
        forget_requests,
        jobs,
        events,
        evaluations,
        catalog,
        logits,
        scores,
        webhooks,
        intake,
    ):
        app.include_router(module.router, dependencies=[Depends(get_tenant)], responses=ERRORS)
    for module in (purge_routes, certificate_routes):
        app.include_router(module.router, dependencies=[Depends(get_tenant)], responses=ERRORS)
    app.include_router(certificate_routes.public_router)
    settings = get_settings()
    app.add_middleware(JobPollFastPath, route=jobs.poll_route())
    app.add_middleware(FastPost, posts=[intake.HOT_POST, unlearn.HOT_POST], handlers=app.exception_handlers)
    app.add_middleware(RequestTimer)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes
    )
    app.add_middleware(RequestId)  # outermost: every answer, the fast path's and the 413 included, carries it
    return app


app = create_app()
