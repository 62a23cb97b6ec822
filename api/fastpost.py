"""A fast path for the POSTs clients send in volume: POST /forget-requests and POST /unlearn.

Both routes already store their common request in one statement on the event loop (core.intake_fast,
core.unlearn_fast); what was left of their cost was the framework's: routing through every route of the
app, resolving dependencies, the exception and routing middlewares, and building the response (about half
of intake's CPU per request, py-spy via `benchmarks/profile_api.py`). For a request this middleware can
judge, it does what the route does, in the same order and with the same functions, without that: a key
checked in the last few seconds (the tenant cache of api.deps), a hot path that can answer (Postgres: on
SQLite the routes have none), no Idempotency-Key, a JSON body whose declared length is at most
api.bodies.SMALL_BODY (larger ones the route parses in a worker thread), parsed and validated as the route
parses it; then the tenant's rate limit is counted and the route's own hot path (`HotPost.answer`) is tried. Its answer, or the error it
raises, is sent as the app would send it (the app's exception handlers answer errors here too).

Everything else goes on to the route, the body replayed exactly as it was received: a missing or unknown
key, an Idempotency-Key, a large, streamed or non-JSON body, a body the route would refuse (it answers the
422 itself), a tenant over its rate limit (the route refuses it: a refused request is not counted), and a
request the hot path leaves to the usual way (a class instead of ids, an unknown model, a busy pool). In
that last case the request was counted and the hot path tried, so the route does neither again
(api.limits.PASSED_ON).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.bodies import SMALL_BODY
from api.deps import KEY_HEADER, cached_tenant
from api.limits import PASSED_ON, retry_after

IDEMPOTENCY_HEADER = b"idempotency-key"
JSON_TYPES = (b"application/json",)

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class HotPost:
    """A route the fast path answers: `parse` reads a body as the route does (raising for anything the route
    would refuse), `answer` is the route's hot path for that body and tenant (None: the usual way answers)."""

    route: BaseRoute
    parse: Callable[[bytes], BaseModel]
    answer: Callable[[Any, str], Awaitable[Response | None]]
    ready: Callable[[], bool]
    """Whether `answer` can answer at all now (on SQLite it never can): else requests go to the route untouched."""


def route_of(routes: Sequence[BaseRoute], endpoint: Callable[..., Any]) -> BaseRoute:
    """The route serving `endpoint`, which labels the requests a fast path answers for it in the metrics."""
    return next(r for r in routes if getattr(r, "endpoint", None) is endpoint)


class FastPost:
    """ASGI middleware answering the hot POST routes for recently seen keys (see the module's docstring).

    `handlers` is the app's exception handlers (FastAPI's `app.exception_handlers`), looked up as the
    framework looks them up: by the exception's classes, most specific first."""

    def __init__(self, app: ASGIApp, posts: Sequence[HotPost], handlers: dict[Any, ExceptionHandler]) -> None:
        self.app = app
        self.posts = {getattr(post.route, "path", None): post for post in posts}
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        post = (
            self.posts.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        tenant = _tenant(scope) if post is not None and post.ready() else None
        if post is None or tenant is None:
            await self.app(scope, receive, send)
            return
        received, raw = await _read_body(receive)
        replay = _replaying(received, receive)
        if raw is None:
            await self.app(scope, replay, send)  # the client left mid-body: the route meets it as before
            return
        try:
            body = post.parse(raw)
        except Exception:  # the route refuses it, with its own message
            await self.app(scope, replay, send)
            return
        if await retry_after(tenant) is not None:  # not counted: the route refuses it the same way
            await self.app(scope, replay, send)
            return
        try:
            response = await post.answer(body, tenant)
        except Exception as exc:
            response = await self._error(scope, exc)
        if response is None:
            token = PASSED_ON.set(tenant)
            try:
                await self.app(scope, replay, send)
            finally:
                PASSED_ON.reset(token)
            return
        scope["route"] = post.route
        await response(scope, replay, send)

    async def _error(self, scope: Scope, exc: Exception) -> Response:
        """The app's answer to an error raised by a hot path; re-raised (a 500) where the app has none."""
        handler = next((self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers), None)
        if handler is None:
            raise exc
        return await handler(Request(scope), exc)


def _tenant(scope: Scope) -> str | None:
    """The caller's tenant when the request suits the fast path: a cached key, no Idempotency-Key, a JSON body
    of declared and small length."""
    key = length = None
    json = False
    for name, value in scope["headers"]:
        if name == KEY_HEADER:
            key = value
        elif name == IDEMPOTENCY_HEADER:
            return None
        elif name == b"content-length":
            length = value
        elif name == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() in JSON_TYPES
    if not key or not json or length is None or not length.isdigit() or int(length) > SMALL_BODY:
        return None
    return cached_tenant(key)


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages received and the whole body; None for the body when the client disconnected first."""
    received: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return received, b"".join(chunks)


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """A receive that hands out the messages already received, in order, then the server's own."""
    pending = list(received)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
