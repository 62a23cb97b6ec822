"""Every response carries an X-Request-ID (the client's, when it sent a sane one), and so do the log lines of
its request; a NUL character in the path or query is refused before any route (Postgres cannot store one)."""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import current_request

HEADER = b"x-request-id"
SANE = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")
"""What a client's id may look like to be echoed: short, printable, nothing a log line would misread."""


def _request_id(scope: Scope) -> str:
    sent = next((value for name, value in scope["headers"] if name == HEADER), None)
    return sent.decode() if sent is not None and SANE.match(sent) else uuid.uuid4().hex


class RequestId:
    """ASGI middleware: set the request id for logs, add it to the response, refuse NUL in path or query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = current_request.set(request_id)
        header = (HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            where = _nul_in(scope)
            if where is None:
                await self.app(scope, receive, send_with_id)
            else:
                await _refuse_nul(send_with_id, where)
        finally:
            current_request.reset(token)


def _nul_in(scope: Scope) -> str | None:
    """ "path" or "query" when that part of the URL holds a NUL character."""
    if "\x00" in scope["path"]:
        return "path"
    if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
        return "query"
    return None


async def _refuse_nul(send: Send, where: str) -> None:
    body = json.dumps(
        {"detail": [{"loc": [where], "msg": "may not contain the NUL character (%00)", "type": "string_nul"}]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
