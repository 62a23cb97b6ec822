"""Database engine and sessions; the schema itself comes only from Alembic migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core import jobmetrics  # noqa: F401  (its Session listeners must exist before any sessionmaker)
from core.settings import get_settings

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

READ_ONLY = "lethe_read_only"
"""Execution option marking a read-only engine view: SQLite begins its transactions deferred there."""


def make_engine(url: str, busy_timeout_s: float = 30.0, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and write-locking transactions.

    SQLite cannot upgrade a read transaction to a write one while another process writes
    (it fails at once instead of waiting), so every transaction starts with BEGIN IMMEDIATE:
    the API and the worker then queue for the lock instead of erroring. Read-only sessions
    (`read_session`, the API's GET requests) begin a plain deferred transaction instead: under WAL
    they read a snapshot beside the writer, so polling clients never queue for the write lock.
    `busy_timeout_s` bounds how long a statement waits for a lock before it fails.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(
                "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
            )

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().db_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@lru_cache
def get_read_engine() -> Engine:
    """The engine for work that only reads; it shares the pool with the writing one."""
    return get_engine().execution_options(**{READ_ONLY: True})


@lru_cache
def get_read_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_read_engine(), expire_on_commit=False)


@contextmanager
def read_connection() -> Iterator[Connection]:
    """A bare connection for reads only, without a Session: the cheapest way to run one Core query."""
    with get_read_engine().connect() as conn:
        yield conn


@contextmanager
def read_session() -> Iterator[Session]:
    """A session for reads only (never commits); on SQLite it does not take the write lock."""
    session = get_read_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


POLL_BUSY_TIMEOUT_S = 0.05
"""The most a poll read on SQLite may wait for a lock (under WAL readers wait only in rare cases)."""


def is_sqlite() -> bool:
    # From the cached engine: the settings' db_url resolves the home folder on the file system each time.
    return get_engine().dialect.name == "sqlite"


@lru_cache
def get_poll_engine() -> Engine:
    """SQLite: a read-only engine for one-row reads made on the event loop itself, which gives up after
    POLL_BUSY_TIMEOUT_S rather than stall the loop on a lock. A local one-row read costs less than
    handing it to a worker thread, whose hop (with its GIL hand-offs) costs more than the read."""
    return make_engine(get_settings().db_url, busy_timeout_s=POLL_BUSY_TIMEOUT_S).execution_options(
        **{READ_ONLY: True}
    )


POLL_POOL_SIZE = 4
"""Connections of an API process's async pool for poll reads; a one-row read holds one for well under 1 ms."""
POLL_READ_TIMEOUT_S = 1.0
"""The most a poll read on the event loop may wait for a connection and its answer before the request goes
on to the route, which reads in a worker thread and answers an outage with 503."""
POLL_RECONNECT_TIMEOUT_S = 10.0
"""How long the pool retries a lost connection in the background before it gives up and opens one again
when a poll asks; psycopg_pool's default (5 minutes, with growing pauses) could keep it away long after
the database is back."""
_POLL_POOLS: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}


@asynccontextmanager
async def poll_pool_open() -> AsyncIterator[None]:
    """On Postgres, keep an async connection pool for one-row poll reads open on this event loop.

    The API's lifespan holds it: a poll then reads on the event loop, with a prepared statement, instead
    of in a worker thread through SQLAlchemy, at a fraction of the CPU. On SQLite it does nothing.
    """
    if get_engine().dialect.name != "postgresql":
        yield
        return
    from psycopg_pool import AsyncConnectionPool

    url = make_url(get_settings().db_url).set(drivername="postgresql")
    pool = AsyncConnectionPool(
        url.render_as_string(hide_password=False),
        min_size=1,
        max_size=POLL_POOL_SIZE,
        open=False,
        name="lethe-poll",
        timeout=POLL_READ_TIMEOUT_S,
        reconnect_timeout=POLL_RECONNECT_TIMEOUT_S,
        kwargs={
            "autocommit": True,
            "prepare_threshold": 0,
            "application_name": "lethe-poll",
        },
    )
    await pool.open(wait=False)
    loop = asyncio.get_running_loop()
    _POLL_POOLS[loop] = pool
    try:
        yield
    finally:
        _POLL_POOLS.pop(loop, None)
        await pool.close()


def poll_pool() -> AsyncConnectionPool | None:
    """The poll-read pool open on the running event loop, if any (Postgres, inside the API's lifespan)."""
    return _POLL_POOLS.get(asyncio.get_running_loop())


def has_poll_pool() -> bool:
    """Whether the running event loop has the poll-read pool open."""
    return poll_pool() is not None


def reset_engine() -> None:
    """Drop cached engines (after a fork, or when settings change in tests)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    get_read_engine.cache_clear()
    if get_poll_engine.cache_info().currsize:
        get_poll_engine().dispose(close=False)
    get_poll_engine.cache_clear()
    get_read_sessionmaker.cache_clear()
