"""Shared fixtures: a fresh Postgres database and Redis queue per test run, real services only."""

from __future__ import annotations

import os

# One torch thread per process: the test process and worker processes share two cores, and
# OpenMP threads that spin-wait on a busy core make small models ten times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.utils import configure, reset_caches

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _require(var: str) -> str:
    url = os.environ.get(var, "")
    if not url:
        pytest.skip(f"{var} is not set: this test needs a real server (make test sets it to the local one)")
    return url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A new, migrated Postgres database for this test run, dropped afterwards."""
    from core.migrate import upgrade

    base = make_url(_require("LETHE_TEST_DATABASE_URL"))
    name = f"lethe_test_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    reset_caches()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require("LETHE_TEST_BROKER_URL")


@pytest.fixture
def pg_env(
    pg_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Settings for Postgres + Redis with an isolated queue and artifact folder; tables emptied after."""
    env = configure(
        monkeypatch,
        home=tmp_path / "home",
        database_url=pg_url,
        broker_url=redis_url,
        queue=f"lethe-test-{uuid.uuid4().hex[:8]}",
    )
    yield env
    import redis

    from tests.utils import truncate_all

    truncate_all(pg_url)
    redis.Redis.from_url(redis_url).delete(env["LETHE_QUEUE"])
    reset_caches()


@pytest.fixture
def client(pg_env: dict[str, str]) -> Iterator:
    """An HTTP client for the API app on Postgres + Redis, authenticated as the tenant "local"."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.utils import new_key

    with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as c:
        yield c


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = SHARED / "golden" / "seed-cifar10"
    if not path.is_dir():
        pytest.skip(f"the study's published logits are not at {path}")
    return path


@pytest.fixture(params=["postgres", "sqlite"])
def any_client(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """`client` on Postgres + Redis, then the same on the embedded default (SQLite database and broker)."""
    from tests.embedded import embedded_client

    if request.param == "postgres":
        yield request.getfixturevalue("client")
        return
    with embedded_client(tmp_path / "embedded", monkeypatch) as client:
        yield client
