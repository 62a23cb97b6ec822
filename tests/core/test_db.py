"""SQLite transactions: writers queue for the write lock, readers do not."""

from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import text

from core.db import READ_ONLY, make_engine


def test_readers_pass_a_held_write_lock_and_writers_wait_for_it(tmp_path):
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process mid-write
    holder.execute("INSERT INTO t VALUES (2)")
    try:
        with engine.execution_options(**{READ_ONLY: True}).connect() as reader:
            assert reader.execute(text("SELECT count(*) FROM t")).scalar_one() == 1  # the committed snapshot
        wrote = threading.Event()

        def write() -> None:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (3)"))
            wrote.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not wrote.wait(0.5)  # BEGIN IMMEDIATE queues behind the holder
        holder.execute("COMMIT")
        assert wrote.wait(10)
        writer.join()
    finally:
        holder.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 3
    engine.dispose()
