"""A fast path for the route clients poll in a loop, GET /jobs/{id}.

For a key checked in the last few seconds (the tenant cache of api.deps) and a job of that tenant, the
answer is read and sent here, without the framework's routing, dependency resolution and response
handling. On SQLite the one-row read also runs on the event loop itself (its lock wait bounded by a short
timeout), since handing it to a worker thread costs more than the read; on a server database it goes to
a worker thread, as a network wait must not block the loop. Everything else (a missing or unknown key,
another tenant's or a missing job, a tenant over its rate limit, any error) goes on to the FastAPI route,
which answers as it always does; the fast path never produces an error of its own.
"""

from __future__ import annotations

import logging

from fastapi.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import TENANTS
from api.limits import retry_after
from api.routes.jobs import job_json, read_job_json
from core.auth import digest
from core.db import get_poll_engine, is_sqlite

log = logging.getLogger(__name__)

PREFIX = "/jobs/"
KEY_HEADER = b"x-api-key"


async def _read(job_id: str, tenant: str) -> str:
    if is_sqlite():
        with get_poll_engine().connect() as conn:
            return job_json(conn, job_id, tenant)
    return await run_in_threadpool(read_job_json, job_id, tenant)


class JobPollFastPath:
    """ASGI middleware answering GET /jobs/{id} for recently seen keys; `route` labels it for the metrics."""

    def __init__(self, app: ASGIApp, route: BaseRoute) -> None:
        self.app = app
        self.route = route

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
        tenant = TENANTS.get(digest(key.decode("latin-1")))
        if tenant is None:
            return None
        try:
            body = await _read(job_id, tenant)
            if await retry_after(tenant) is not None:
                return None
        except Exception as exc:  # the route meets the same error and answers it (404, or 503 for an outage)
            log.debug("job poll fast path passed on: %s", exc)
            return None
        return body.encode()
