"""GET /jobs/{id}/events: a job's state and progress as server-sent events, until it finishes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import TenantDep
from api.routes.jobs import read_job_json
from core.errors import NotFound
from core.tables import FINISHED

router = APIRouter(prefix="/jobs", tags=["jobs"])

KEEPALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies and clients from closing a quiet stream."""
MAX_STREAM_SECONDS = 600.0
"""A stream ends after this even if its job has not: clients reconnect (EventSource does by itself) and get
the job's state at once, so no connection is held for the whole of a day-long training."""

EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["job", "end"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
        },
    },
}
"""Each event of the stream: `job` with the job as GET /jobs/{id} shows it (numbered), then `end` with `{}`."""


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event (the data is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


async def job_stream(
    request: Request, job_id: str, tenant: str, first: str, interval: float
) -> AsyncIterator[str]:
    """`job` events with the job as GET /jobs/{id} shows it, each time it changes; `end` once it has finished."""
    body, last, sent_at, event_id = first, None, time.monotonic(), 0
    ends_at = time.monotonic() + MAX_STREAM_SECONDS
    while time.monotonic() < ends_at:
        if body != last:
            event_id += 1
            yield sse("job", body, event_id)
            last, sent_at = body, time.monotonic()
            if json.loads(body)["status"] in FINISHED:
                yield sse("end", "{}")
                return
        elif time.monotonic() - sent_at >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            sent_at = time.monotonic()
        await asyncio.sleep(interval)
        if await request.is_disconnected():
            return
        try:
            body = await run_in_threadpool(read_job_json, job_id, tenant)
        except NotFound:
            return


@router.get(
    "/{job_id}/events",
    summary="Follow a job as server-sent events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            "description": "`event: job` with the job's JSON on every change; `event: end` after it finishes",
        }
    },
)
async def job_events(
    job_id: str,
    request: Request,
    tenant: TenantDep,
    interval: Annotated[float, Query(ge=0.1, le=10, description="seconds between looks at the job")] = 0.5,
) -> StreamingResponse:
    """A text/event-stream: an `event: job` whose data is the job as GET /jobs/{id} shows it, first at once and then each time its status or progress changes, a comment every 15 s while nothing does, and `event: end` once it has succeeded, failed or been cancelled, after which the stream closes (EventSource clients should close on `end` rather than reconnect). A stream also closes after 10 minutes without `end`: reconnect to follow on."""
    first = await run_in_threadpool(read_job_json, job_id, tenant)  # an unknown job is a 404, not a stream
    return StreamingResponse(
        job_stream(request, job_id, tenant, first, interval),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
