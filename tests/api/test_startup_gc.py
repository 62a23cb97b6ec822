"""What the API built at start-up is kept out of the garbage collector's full passes while it serves."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from api.main import create_app


def test_start_up_objects_are_frozen_while_serving_and_released_at_shutdown(client):
    # `client` is an app in its lifespan: its start-up objects (imports, app, settings) are frozen.
    assert gc.get_freeze_count() > 50_000
    assert client.get("/health").status_code == 200


def test_young_garbage_left_by_start_up_is_collected_not_frozen(pg_env):
    class Cycle:
        pass

    gc.unfreeze()
    gc.disable()  # only the start-up's own collection may collect it
    try:
        cycle = Cycle()
        cycle.me = cycle
        marker = id(cycle)
        del cycle
        with TestClient(create_app()):
            assert marker not in {id(o) for o in gc.get_objects() if isinstance(o, Cycle)}
            frozen = gc.get_freeze_count()
        assert frozen > 0 and gc.get_freeze_count() == 0
    finally:
        gc.enable()
