"""The FastAPI application."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from api.deps import get_tenant
from api.errors import install_error_handlers
from api.routes import catalog, evaluations, forget_requests, jobs, models, system, unlearn


def create_app() -> FastAPI:
    app = FastAPI(
        title="Lethe",
        version="0.1.0",
        description="Machine unlearning as a service: forget training samples, measure how well it forgot.",
    )
    install_error_handlers(app)
    app.include_router(system.router)
    for module in (models, unlearn, forget_requests, jobs, evaluations, catalog):
        app.include_router(module.router, dependencies=[Depends(get_tenant)])
    return app


app = create_app()
