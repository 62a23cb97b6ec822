"""When a key's cache entry expires, the clients using it share one database lookup instead of one each."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import nullcontext

import pytest

from api import deps


@pytest.fixture
def slow_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The database's answer takes 0.2 s; each lookup is recorded (key digest 'bad' is unknown)."""
    calls: list[str] = []
    lock = threading.Lock()

    def tenant_for_digest(_session, key_digest: str) -> str | None:
        with lock:
            calls.append(key_digest)
        time.sleep(0.2)
        return None if key_digest == "bad" else f"tenant-of-{key_digest}"

    monkeypatch.setattr(deps, "tenant_for_digest", tenant_for_digest)
    monkeypatch.setattr(deps, "read_session", nullcontext)
    monkeypatch.setattr(deps.get_settings(), "auth_cache_seconds", 60.0)
    deps.TENANTS.clear()
    yield calls
    deps.TENANTS.clear()


def test_concurrent_misses_of_one_key_make_one_lookup_and_the_next_request_reads_the_cache(slow_lookups):
    async def burst() -> list[str | None]:
        return await asyncio.gather(*(deps._tenant_of(d) for d in ["k1"] * 32 + ["k2"] * 8))

    answers = asyncio.run(burst())
    assert answers == ["tenant-of-k1"] * 32 + ["tenant-of-k2"] * 8
    assert sorted(slow_lookups) == ["k1", "k2"]
    assert asyncio.run(deps._tenant_of("k1")) == "tenant-of-k1" and len(slow_lookups) == 2
    assert deps._LOOKUPS == {}


def test_unknown_keys_are_not_cached_and_a_caller_leaving_does_not_cancel_the_others(slow_lookups):
    async def scenario() -> tuple[list[str | None], bool]:
        first = asyncio.ensure_future(deps._tenant_of("k3"))
        await asyncio.sleep(0.05)
        others = [asyncio.ensure_future(deps._tenant_of("k3")) for _ in range(4)]
        first.cancel()  # the first client disconnected while its lookup ran
        got = await asyncio.gather(*others)
        unknown = await asyncio.gather(deps._tenant_of("bad"), deps._tenant_of("bad"))
        return [*got, *unknown], first.cancelled()

    answers, cancelled = asyncio.run(scenario())
    assert cancelled and answers == ["tenant-of-k3"] * 4 + [None, None]
    assert slow_lookups == ["k3", "bad"]
    asyncio.run(deps._tenant_of("bad"))
    assert slow_lookups == ["k3", "bad", "bad"]  # an unknown key is looked up again next time
