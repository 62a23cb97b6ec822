"""Per-tenant rate limit (429 with Retry-After) and the request body limit (413)."""

from __future__ import annotations

from core.settings import get_settings
from tests.utils import new_key, reset_caches


def test_rate_limit_is_per_tenant_with_retry_after(client, monkeypatch):
    monkeypatch.setenv("LETHE_RATE_LIMIT", "3/minute")
    reset_caches()
    answers = [client.get("/methods").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    limited = client.get("/methods")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "3/minute" in limited.json()["detail"]
    # Another tenant has its own budget; /health is never limited.
    assert client.get("/methods", headers={"X-API-Key": new_key("other")}).status_code == 200
    assert client.get("/health").status_code == 200


def test_large_bodies_are_refused_before_parsing(client, monkeypatch):
    monkeypatch.setenv("LETHE_MAX_BODY_BYTES", "2048")
    get_settings.cache_clear()
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(), headers=dict(client.headers)) as small:
        big = {"model_id": "m", "forget_ids": list(range(2000)), "method": "none"}
        r = small.post("/unlearn", json=big)
        assert r.status_code == 413 and "2048" in r.json()["detail"]

        def chunks():
            yield b'{"model_id": "m", "forget_ids": ['
            for _ in range(500):
                yield b"1, 2, 3, 4, "
            yield b'5], "method": "none"}'

        streamed = small.post("/unlearn", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert (
            small.post("/unlearn", json={"model_id": "m", "forget_ids": [1], "method": "none"}).status_code
            == 404
        )


def test_the_embedded_default_limits_rate_in_memory(tmp_path, monkeypatch):
    """With no Redis (the SQLite broker) the limit lives in the process: the same answers, per tenant."""
    from fastapi.testclient import TestClient

    from api.limits import _limiter
    from api.main import create_app
    from core.migrate import upgrade
    from tests.utils import configure

    configure(monkeypatch, home=tmp_path / "home", maintenance_seconds=0, rate_limit="3/minute")
    assert get_settings().broker.startswith("sqla+sqlite")
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    with TestClient(create_app(), headers={"X-API-Key": new_key("local")}) as client:
        answers = [client.get("/methods").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = client.get("/methods")
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        assert client.get("/methods", headers={"X-API-Key": new_key("other")}).status_code == 200
        storage = client.portal.call(_async_storage, _limiter)
    assert type(storage).__name__ == "MemoryStorage"
    reset_caches()


async def _async_storage(limiter_of) -> object:
    """The storage behind this event loop's limiter (called on the app's own loop)."""
    limiter, _ = limiter_of()
    return limiter.storage
