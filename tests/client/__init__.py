"""Helpers of the client and CLI tests: the real API on a free port, and a worker process running its jobs.

Each test module shares one stack (database, artifact folder, server, API key and a small trained model),
so the model is trained once per module; jobs run only inside `worker()` blocks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.broker import consuming, current_queues, wait_until_idle
from tests.e2e.stack import free_port
from tests.utils import configure, new_key, reset_caches, train_model, truncate_all

TINY_RECIPE = {"epochs": 1, "lr": 0.05, "batch_size": 64}
FORGET = list(range(0, 600, 20))  # 30 digits training samples


@dataclass(frozen=True)
class Stack:
    url: str
    api_key: str
    model_id: str  # "tiny": a ready width-4 digits model


@contextmanager
def serve(app: Any = None) -> Iterator[str]:
    """The API app (or another ASGI app) served over real HTTP by uvicorn in a thread; yields its base URL."""
    from api.main import create_app

    port = free_port()
    config = uvicorn.Config(app or create_app(), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def live_stack(pg_url: str, redis_url: str, home: Path) -> Iterator[Stack]:
    """pg_env's settings for a whole module, the server, a key of tenant "local" and the model "tiny"."""
    import redis

    queue = f"lethe-test-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        # Polling a job several times a second must not run into the per-tenant rate limit.
        configure(
            mp, home=home, database_url=pg_url, broker_url=redis_url, queue=queue, rate_limit="100000/minute"
        )
        try:
            model_id = train_tiny()
            with serve() as url:
                yield Stack(url=url, api_key=new_key("local"), model_id=model_id)
        finally:
            truncate_all(pg_url)
            redis.Redis.from_url(redis_url).delete(queue)
    reset_caches()


@contextmanager
def worker() -> Iterator[None]:
    """A real worker process consumes the stack's queue until the block ends; a job it is running finishes."""
    with consuming() as process:
        try:
            yield
        finally:
            process.release(current_queues())
            wait_until_idle(process, timeout=600, running_only=True)


def train_tiny() -> str:
    """Register digits and train the width-4 model "tiny" on it for one epoch; returns its id."""
    return train_model("tiny", {"width": 4}, TINY_RECIPE)
