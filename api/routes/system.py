"""Health of the parts the service needs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SessionDep
from api.schemas import Health
from core.queue import broker_ok

router = APIRouter(tags=["system"])


@router.get(
    "/health",
    response_model=Health,
    summary="Is the service able to take work?",
    responses={503: {"model": Health, "description": "a part is down; it is named"}},
)
def health(session: SessionDep) -> JSONResponse:
    """Database and broker reachability; 503 names the part that is down. Needs no API key."""
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"down: {type(exc).__name__}"
    broker = "ok" if broker_ok() else "down"
    body = Health(status="ok" if database == broker == "ok" else "down", database=database, broker=broker)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
