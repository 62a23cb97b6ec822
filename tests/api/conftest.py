"""API fixtures: a client on either backend (the embedded SQLite default, or Postgres + Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def embedded_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """An HTTP client for the API app on the embedded default (SQLite files), as the tenant "local"."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.migrate import upgrade
    from core.settings import get_settings
    from tests.utils import configure, new_key, reset_caches

    configure(monkeypatch, home=tmp_path / "home", maintenance_seconds=0)
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as c:
        yield c
    reset_caches()


@pytest.fixture(params=["embedded", "postgres"])
def any_client(request: pytest.FixtureRequest) -> Iterator:
    """The API on each backend in turn."""
    yield request.getfixturevalue("embedded_client" if request.param == "embedded" else "client")


@pytest.fixture
def no_background_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests sweep when they choose; the API's own sweep thread would start batches behind their back."""
    monkeypatch.setenv("LETHE_MAINTENANCE_SECONDS", "0")
