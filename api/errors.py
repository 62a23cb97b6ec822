"""Map domain errors to HTTP: 404 unknown id, 409 conflict, 422 bad input; never a 500 for bad input."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from core.errors import Conflict, InvalidInput, NotFound, TooLarge


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
        return JSONResponse({"detail": exc.details()}, status_code=422)
