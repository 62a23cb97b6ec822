"""The schema comes only from migrations: upgrade, downgrade and upgrade again on Postgres and SQLite."""

from __future__ import annotations

import uuid

import psycopg
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from core.migrate import downgrade, upgrade
from core.tables import Base

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


def test_migrations_roundtrip_on_postgres(pg_url):
    base = make_url(pg_url)
    name = f"lethe_mig_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        _roundtrip(base.set(database=name).render_as_string(hide_password=False))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
