"""The schema comes only from migrations: upgrade, downgrade and upgrade again on Postgres and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from core.migrate import alembic_config, downgrade, upgrade
from core.tables import Base
from tests.utils import reset_caches

EXPECTED = {
    "datasets",
    "models",
    "forget_requests",
    "jobs",
    "audit_events",
    "reference_sets",
    "runs",
    "evaluations",
    "studies",
}


def _roundtrip(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert tables >= EXPECTED
    assert set(Base.metadata.tables) <= tables
    for name, table in Base.metadata.tables.items():
        cols = {c["name"] for c in inspect(engine).get_columns(name)}
        assert cols == set(table.columns.keys()), name
    downgrade(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert set(inspect(engine).get_table_names()) >= EXPECTED
    engine.dispose()


def test_migrations_roundtrip_on_sqlite(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'm.sqlite'}")


@contextmanager
def _scratch_postgres(pg_url: str) -> Iterator[str]:
    """An empty Postgres database of its own, dropped afterwards."""
    base = make_url(pg_url)
    name = f"lethe_mig_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        reset_caches()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_roundtrip_on_postgres(pg_url):
    with _scratch_postgres(pg_url) as url:
        _roundtrip(url)


KEPT = ("datasets", "models", "jobs", "forget_requests", "audit_events")
"""Tables of the first revision: every later step, down or up, must keep their rows."""


def _fill(url: str, monkeypatch: pytest.MonkeyPatch, home: Path) -> dict[str, int]:
    """The rows a deployment holds (a model, its training and unlearning, a key, audit events); their counts."""
    from core import services
    from core.auth import create_key
    from core.db import session_scope
    from tests.utils import add_ready_model, configure

    configure(monkeypatch, home=home, database_url=url)
    with session_scope() as session:
        add_ready_model(session, "m1")
        services.create_training(
            session, tenant_id="local", name="t", dataset_ref="digits", arch={"width": 4}, recipe=None
        )
    with session_scope() as session:
        services.create_unlearn(
            session, tenant_id="local", model_ref="m1", forget_ids=[1, 2, 3], method="none", params=None
        )
        create_key(session, "local")
    return _counts(url)


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in KEPT}
    engine.dispose()
    return counts


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_downgrade_and_upgrade_keeps_the_rows(backend, request, tmp_path, monkeypatch):
    """With data in the tables, step down one revision at a time and back up to head from each."""
    revisions = [
        r.revision for r in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()
    ]
    with ExitStack() as stack:
        stack.callback(reset_caches)  # the engine this test opened on its own database
        url = (
            f"sqlite:///{tmp_path / 'm.sqlite'}"
            if backend == "sqlite"
            else stack.enter_context(_scratch_postgres(request.getfixturevalue("pg_url")))
        )
        upgrade(url)
        filled = _fill(url, monkeypatch, tmp_path / "home")
        assert all(filled.values()), filled
        for below in revisions[1:]:  # newest first: head's parent, then its parent, ...
            reset_caches()
            downgrade(url, below)
            assert _counts(url) == filled, f"down to {below}"
            upgrade(url)
            assert _counts(url) == filled, f"up from {below}"
            downgrade(url, below)  # and stay there for the next step down
        downgrade(url)  # to base: the tables go, with their rows
        assert set(inspect(create_engine(url)).get_table_names()) <= {"alembic_version"}
