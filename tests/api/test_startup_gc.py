"""What the API built at start-up is kept out of the garbage collector's full passes, once per process."""

from __future__ import annotations

import gc

import pytest
from fastapi.testclient import TestClient

from api import main
from api.main import create_app


def test_start_up_objects_are_frozen_while_serving(client):
    # `client` is an app in its lifespan: this process's first start froze its objects (imports, app, settings).
    assert gc.get_freeze_count() > 50_000
    assert client.get("/health").status_code == 200


def test_the_first_start_freezes_after_collecting_and_later_starts_freeze_nothing(
    pg_env, monkeypatch: pytest.MonkeyPatch
):
    class Cycle:
        pass

    gc.unfreeze()
    monkeypatch.setattr(main, "_frozen", False)
    gc.disable()  # only the start-up's own collection may collect the cycle
    try:
        cycle = Cycle()
        cycle.me = cycle
        del cycle
        with TestClient(create_app()):
            assert not [o for o in gc.get_objects() if isinstance(o, Cycle)]  # collected, not frozen
            frozen = gc.get_freeze_count()
        kept = gc.get_freeze_count()  # after shutdown: less what the app's teardown freed by reference count
        assert frozen > 50_000 and kept > frozen // 2
        later = Cycle()
        later.me = later
        del later
        with TestClient(create_app()):
            assert gc.get_freeze_count() <= kept  # a second start in one process freezes nothing more
        gc.collect()
        assert not [
            o for o in gc.get_objects() if isinstance(o, Cycle)
        ]  # later garbage is collected as usual
    finally:
        gc.enable()
