"""The API on the embedded default (SQLite database and broker under a temporary LETHE_HOME), for tests that
run on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@contextmanager
def embedded_client(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A client of a fresh, migrated embedded deployment, authenticated as the tenant "local"."""
    from api.main import create_app
    from core.migrate import upgrade
    from core.settings import get_settings
    from tests.utils import configure, new_key, reset_caches

    configure(monkeypatch, home=home, maintenance_seconds=0, rate_limit="100000/minute")
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    try:
        with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as client:
            yield client
    finally:
        reset_caches()
