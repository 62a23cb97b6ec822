"""Shared fixtures: a fresh Postgres database and Redis queue per test run, real services only.

Without LETHE_TEST_DATABASE_URL and LETHE_TEST_BROKER_URL a bare `pytest` uses the same local servers as
`make test` (the README's defaults), so it runs the whole suite; a server that does not answer stops the
run at once with the variable's name, instead of skipping the tests that need it and reading green.
"""

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

from tests.broker import current_queues, stop_shared_worker
from tests.utils import configure, reset_caches

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

TEST_SERVERS = {
    "LETHE_TEST_DATABASE_URL": "postgresql+psycopg://root@127.0.0.1:5432/test",
    "LETHE_TEST_BROKER_URL": "redis://127.0.0.1:6379/15",
}
"""The servers the suite talks to, with the defaults that the README and the Makefile give."""
for _var, _default in TEST_SERVERS.items():
    os.environ.setdefault(_var, _default)


def _require(var: str) -> str:
    """The server URL in `var`; an empty one ends the run at once rather than skipping what needs it."""
    url = os.environ.get(var, "")
    if not url:
        _unreachable(var, "it is set to an empty string")
    return url


def _unreachable(var: str, why: str) -> None:
    pytest.exit(
        f"{var}: {why}. The suite needs a real Postgres (LETHE_TEST_DATABASE_URL) and Redis "
        f"(LETHE_TEST_BROKER_URL); defaults: {TEST_SERVERS}",
        returncode=pytest.ExitCode.USAGE_ERROR,
    )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A new, migrated Postgres database for this test run, dropped afterwards."""
    from core.migrate import upgrade

    base = make_url(_require("LETHE_TEST_DATABASE_URL"))
    name = f"lethe_test_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _unreachable("LETHE_TEST_DATABASE_URL", f"{base.render_as_string()} does not answer ({exc})")
    url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    stop_shared_worker()
    reset_caches()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = _require("LETHE_TEST_BROKER_URL")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=10).ping()
    except redis.RedisError as exc:
        _unreachable("LETHE_TEST_BROKER_URL", f"{url} does not answer ({exc})")
    return url


@pytest.fixture(scope="session")
def lethe_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifact folder for the run: the tests' worker process, started once, writes where they read."""
    return tmp_path_factory.mktemp("lethe") / "home"


@pytest.fixture
def pg_env(
    pg_url: str, redis_url: str, lethe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Settings for Postgres + Redis with an isolated queue; tables and the queues emptied after."""
    env = configure(
        monkeypatch,
        home=lethe_home,
        database_url=pg_url,
        broker_url=redis_url,
        queue=f"lethe-test-{uuid.uuid4().hex[:8]}",
    )
    yield env
    import redis

    from tests.utils import truncate_all

    queues = current_queues()
    truncate_all(pg_url)
    redis.Redis.from_url(redis_url).delete(*queues)
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
