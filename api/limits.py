"""Request limits: body size for everyone, a rate per tenant (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from contextvars import ContextVar
from weakref import WeakKeyDictionary

from fastapi import HTTPException
from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import get_settings

log = logging.getLogger(__name__)


_LIMITERS: WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[SlidingWindowCounterRateLimiter, RateLimitItem]
] = WeakKeyDictionary()
STORE_TIMEOUT_S = 1.0
"""How long a check waits on Redis before the request is served unchecked."""
PASSED_ON: ContextVar[str | None] = ContextVar("lethe_passed_on", default=None)
"""The tenant whose request the POST fast path (api.fastpost) has already counted against the rate limit and
tried on its route's hot path before passing it on to the route: the route does neither a second time."""


def passed_on(tenant: str) -> bool:
    """Whether this request of `tenant`'s was counted and its hot path tried by the POST fast path."""
    return PASSED_ON.get() == tenant


def _limiter() -> tuple[SlidingWindowCounterRateLimiter, RateLimitItem]:
    """This event loop's limiter: shared across API processes through Redis when the broker is Redis, per
    process otherwise. Checked on the event loop with the async client, so a request costs no thread hop;
    async connections belong to the loop that opened them, hence one limiter per loop."""
    loop = asyncio.get_running_loop()
    found = _LIMITERS.get(loop)
    if found is None:
        settings = get_settings()
        if settings.broker.startswith("redis"):
            storage = storage_from_string(
                "async+" + settings.broker,
                implementation="redispy",
                socket_timeout=STORE_TIMEOUT_S,
                socket_connect_timeout=STORE_TIMEOUT_S,
            )
        else:
            storage = storage_from_string("async+memory://")
        found = _LIMITERS[loop] = (SlidingWindowCounterRateLimiter(storage), parse(settings.rate_limit))
    return found


def reset_limiters() -> None:
    """Forget every limiter, so a changed broker or rate limit setting applies."""
    _LIMITERS.clear()


async def retry_after(tenant: str) -> int | None:
    """Count one request of the tenant's; None when it is within the limit, else seconds until it may retry.

    A refused request is not counted, so asking again after a refusal refuses again without using more."""
    limiter, item = _limiter()
    scope = ("lethe", get_settings().queue, tenant)  # one deployment's tenants share nothing with another's
    try:
        if await limiter.hit(item, *scope):
            return None
        reset = (await limiter.get_window_stats(item, *scope)).reset_time
    except Exception as exc:  # the limit's store (Redis) is down: serve rather than fail every request
        log.warning("rate limit not checked: %s", exc)
        return None
    return max(1, math.ceil(reset - time.time()))


async def check_rate(tenant: str) -> None:
    """429 with Retry-After once a tenant is over the limit; a sliding window counter, O(1) per check."""
    retry = await retry_after(tenant)
    if retry is not None:
        raise HTTPException(
            status_code=429,
            detail=f"rate limit of {get_settings().rate_limit} exceeded for tenant {tenant!r}; retry in {retry}s",
            headers={"Retry-After": str(retry)},
        )


UPLOAD_PATHS = frozenset({"/models", "/scores"})
"""Routes whose multipart uploads may reach max_upload_bytes rather than max_body_bytes."""


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
        if scope["path"] in UPLOAD_PATHS and headers.get(b"content-type", b"").startswith(
            b"multipart/form-data"
        ):
            limit = self.max_upload_bytes  # checkpoints and logits are large; only their routes take them
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
