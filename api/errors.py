"""Map domain errors to HTTP: 404 unknown id, 409 conflict, 422 bad input; never a 500 for bad input."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.errors import Conflict, InvalidInput, NotFound, TooLarge
from core.quotas import QuotaExceeded

MAX_ERRORS = 20
"""Entries one 422 lists at most: a request with a million bad ids gets a short answer."""
MAX_MSG = 300


def _loc_part(part: Any) -> str | int:
    return part if isinstance(part, int) and not isinstance(part, bool) else str(part)[:100]


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """loc, msg and type of each error; never the input (it may be huge, or NaN that JSON cannot carry)."""
    return [
        {
            "loc": [_loc_part(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", ""))[:MAX_MSG],
            "type": str(e.get("type", "value_error")),
        }
        for e in list(errors)[:MAX_ERRORS]
    ]


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=404)

    @app.exception_handler(TooLarge)
    async def _too_large(_req: Request, exc: TooLarge) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=413)

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=409)

    @app.exception_handler(QuotaExceeded)
    async def _quota(_req: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.message}, status_code=429, headers={"Retry-After": str(exc.retry_after)}
        )

    @app.exception_handler(DBAPIError)
    async def _database_down(_req: Request, exc: DBAPIError) -> JSONResponse:
        # Lost connections are the database being unavailable, not a bug of the request.
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return JSONResponse(
                {"detail": "the database is unavailable; retry shortly"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        raise exc

    @app.exception_handler(InvalidInput)
    async def _invalid(_req: Request, exc: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": validation_details(exc.details())}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers or None)
