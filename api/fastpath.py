"""A fast path for the route clients poll in a loop, GET /jobs/{id}.

For a key checked in the last few seconds (the tenant cache of api.deps) and a job of that tenant, the
answer is read and sent here, without the framework's routing, dependency resolution and response
handling. The one-row read runs on the event loop too, as handing it to a worker thread costs more than
the read: on SQLite synchronously, its lock wait bounded by a short timeout; on Postgres through the
async psycopg pool the app's lifespan opens (core.db.poll_pool_open), with a prepared statement and a
bounded wait, so a slow database never blocks the loop (after a failed read there, the route reads for a
second: POOL_REST_S). Everything else (a missing or unknown key,
another tenant's or a missing job, a tenant over its rate limit, any error) goes on to the FastAPI route,
which answers as it always does; the fast path never produces an error of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import KEY_HEADER, cached_tenant
from api.limits import retry_after
from api.routes.jobs import job_json, job_json_async
from core.db import POLL_READ_TIMEOUT_S, get_poll_engine, is_sqlite, poll_pool
from core.errors import NotFound

log = logging.getLogger(__name__)

PREFIX = "/jobs/"
POOL_REST_S = 1.0
"""After a failed read through the Postgres poll pool (an outage, a dropped connection), polls go to the
route for this long, so that during an outage only one poll a second waits on the pool first."""


class JobPollFastPath:
    """ASGI middleware answering GET /jobs/{id} for recently seen keys; `route` labels it for the metrics."""

    def __init__(self, app: ASGIApp, route: BaseRoute) -> None:
        self.app = app
        self.route = route
        self.pool_rests_until = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            job_id = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
            if job_id and "/" not in job_id:
                body = await self._answer(scope, job_id)
                if body is not None:
                    scope["route"] = self.route
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, job_id: str) -> bytes | None:
        """The job's JSON, or None to leave the request to the FastAPI route."""
        key = next((value for name, value in scope["headers"] if name == KEY_HEADER), None)
        if not key:
            return None
        tenant = cached_tenant(key)
        if tenant is None:
            return None
        try:
            body = await self._read(job_id, tenant)
            if body is None or await retry_after(tenant) is not None:
                return None
        except Exception as exc:  # the route meets the same error and answers it (404, or 503 for an outage)
            log.debug("job poll fast path passed on: %s", exc)
            return None
        return body.encode()

    async def _read(self, job_id: str, tenant: str) -> str | None:
        """The job's JSON read on the event loop; None where the route should read it instead."""
        if is_sqlite():
            with get_poll_engine().connect() as conn:
                return job_json(conn, job_id, tenant)
        pool = poll_pool()
        if pool is None or time.monotonic() < self.pool_rests_until:  # outside the lifespan, or resting
            return None
        try:
            async with asyncio.timeout(POLL_READ_TIMEOUT_S):
                return await job_json_async(pool, job_id, tenant)
        except NotFound:
            raise
        except Exception as exc:
            self.pool_rests_until = time.monotonic() + POOL_REST_S
            log.warning(
                "poll read through the Postgres pool failed, the route reads for %ss: %r", POOL_REST_S, exc
            )
            raise
