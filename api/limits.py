"""Request limits: body size for everyone, a rate per tenant (429 with Retry-After)."""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_tenant
from core.settings import get_settings

log = logging.getLogger(__name__)


@lru_cache
def _limiter() -> tuple[MovingWindowRateLimiter, RateLimitItem]:
    """Shared across API processes through Redis when the broker is Redis; per process otherwise."""
    settings = get_settings()
    uri = settings.broker if settings.broker.startswith("redis") else "memory://"
    return MovingWindowRateLimiter(storage_from_string(uri)), parse(settings.rate_limit)


def rate_limit(tenant: Annotated[str, Depends(get_tenant)]) -> None:
    limiter, item = _limiter()
    scope = ("lethe", get_settings().queue, tenant)  # one deployment's tenants share nothing with another's
    try:
        if limiter.hit(item, *scope):
            return
    except Exception as exc:  # the limit's store (Redis) is down: serve rather than fail every request
        log.warning("rate limit not checked: %s", exc)
        return
    reset = limiter.get_window_stats(item, *scope).reset_time
    retry = max(1, math.ceil(reset - time.time()))
    raise HTTPException(
        status_code=429,
        detail=f"rate limit of {get_settings().rate_limit} exceeded for tenant {tenant!r}; retry in {retry}s",
        headers={"Retry-After": str(retry)},
    )


class BodySizeLimit:
    """413 for a request body above max_bytes, whether it declares its length or streams it."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = self.max_bytes
        if scope["path"] == "/models" and headers.get(b"content-type", b"").startswith(
            b"multipart/form-data"
        ):
            limit = self.max_upload_bytes  # checkpoints are large; only their route takes them
        await self._limited(scope, receive, send, headers, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, headers: dict, limit: int) -> None:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server stops at the declared length
            return
        # A streamed body: read it whole (it is small by definition, or refused) before the app sees it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await self._reject(send, limit)
                return
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replay_receive, send)

    async def _reject(self, send: Send, limit: int) -> None:
        body = f'{{"detail": "request body larger than {limit} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
