"""First-start set-up of the embedded default: the digits data set and a small `demo` model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import services
from core.auth import create_key
from core.settings import get_settings
from core.tables import DEFAULT_TENANT, Dataset, Model

log = logging.getLogger(__name__)

DEMO_RECIPE = {"batch_size": 64, "lr": 0.05, "schedule": "cosine"}
"""The demo's recipe but its epochs; LETHE_DEMO_EPOCHS and LETHE_DEMO_WIDTH size it (smaller on a slow machine)."""


def ensure_local_key(session: Session, home: Path, tenant_id: str = DEFAULT_TENANT) -> Path | None:
    """On first start, create a key for the local tenant and keep it in home/api-key (owner-only)."""
    path = home / "api-key"
    if path.exists():
        return None
    key = create_key(session, tenant_id)
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return path


def ensure_digits(session: Session, tenant_id: str = DEFAULT_TENANT) -> Dataset:
    """Register scikit-learn's digits once (it ships with the package: nothing to download)."""
    existing = session.execute(
        select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.name == "digits")
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    from ml.data import load_dataset

    data = load_dataset("digits")
    return services.register_dataset(
        session,
        tenant_id=tenant_id,
        name="digits",
        kind="digits",
        root=None,
        options={},
        summary=data.summary(),
        train_labels=data.train_y,
    )


def ensure_demo(session: Session, tenant_id: str = DEFAULT_TENANT) -> str | None:
    """Queue training of the `demo` model unless it exists; returns the new job id, if any."""
    ensure_digits(session, tenant_id)
    exists = session.execute(
        select(Model.id).where(Model.tenant_id == tenant_id, Model.name == "demo")
    ).first()
    if exists:
        return None
    settings = get_settings()
    job, _model = services.create_training(
        session,
        tenant_id=tenant_id,
        name="demo",
        dataset_ref="digits",
        arch={"form": "cifar", "width": settings.demo_width},
        recipe={**DEMO_RECIPE, "epochs": settings.demo_epochs},
    )
    return job.id
