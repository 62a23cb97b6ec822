"""The POST fast path (api.fastpost) on Postgres + Redis: a cached key's POST /forget-requests and POST /unlearn
answered before any route with the route's own answers, errors as the app answers them, and everything it
passes on answered by the route with the body intact, counted against the rate limit once."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from api.metrics import REGISTRY
from core import intake_fast
from core.db import session_scope
from core.tables import ForgetRequest, Job
from tests.utils import add_ready_model, reset_caches

POSTS = {
    "/forget-requests": {"model_id": "m1", "forget_ids": [4, 1], "requested_by": "dpo"},
    "/unlearn": {"model_id": "m1", "forget_ids": [4, 1], "method": "finetune", "params": {"epochs": 1}},
}


pytestmark = pytest.mark.usefixtures("no_background_sweep")


@pytest.fixture
def model(client) -> str:
    with session_scope() as session:
        model_id = add_ready_model(session, "m1").id
    assert client.get("/models/m1").status_code == 200  # the key is now in the tenant cache
    return model_id


@pytest.fixture
def routed(monkeypatch) -> list[str]:
    """The path of every request a route handled."""
    seen: list[str] = []
    original = APIRoute.handle

    async def spy(self, scope, receive, send):
        seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", spy)
    return seen


def _served(path: str) -> float:
    """Requests the metrics counted for the route `path` answered 202."""
    labels = {"method": "POST", "route": path, "status": "202"}
    return REGISTRY.get_sample_value("lethe_http_request_duration_seconds_count", labels) or 0.0


def _count(table: type) -> int:
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize("path", sorted(POSTS))
def test_a_cached_keys_post_is_answered_before_any_route_as_the_route_answers_it(client, model, routed, path):
    before = _served(path)
    fast = client.post(path, json=POSTS[path])
    assert routed == [] and _served(path) == before + 1  # labelled by the route's template

    assert fast.status_code == 202
    # The route's own answer to the same request (an Idempotency-Key sends it there).
    usual = client.post(path, json=POSTS[path], headers={"Idempotency-Key": f"k-{path}"})
    assert routed == [path] and usual.status_code == 202
    assert fast.json().keys() == usual.json().keys()
    assert fast.headers["content-type"] == usual.headers["content-type"] == "application/json"
    if path == "/unlearn":
        assert fast.headers["location"] == f"/jobs/{fast.json()['job_id']}"
        assert fast.headers["retry-after"] == usual.headers["retry-after"]
    assert len(fast.headers["x-request-id"]) == 32
    request_id = fast.json()["forget_request_id"]
    stored = client.get(f"/forget-requests/{request_id}").json()
    assert stored["n_ids"] == 2 and stored["model_id"] == model


@pytest.mark.parametrize("path", sorted(POSTS))
def test_the_hot_paths_errors_are_the_apps_answers_and_never_reach_the_route(client, model, routed, path):
    bad = client.post(path, json={**POSTS[path], "forget_ids": [4, 10**6]})
    usual = client.post(
        path, json={**POSTS[path], "forget_ids": [4, 10**6]}, headers={"Idempotency-Key": "b"}
    )
    assert (bad.status_code, bad.json()) == (422, usual.json())
    assert routed == [path]  # only the one sent with the Idempotency-Key


def test_a_lost_database_is_a_503_and_the_request_is_not_taken_in_a_second_way(
    client, model, routed, monkeypatch
):
    async def lost(*args, **kwargs):
        raise OperationalError("forget request intake", None, Exception("connection lost"))

    monkeypatch.setattr(intake_fast, "take_in_async", lost)
    answer = client.post("/forget-requests", json=POSTS["/forget-requests"])
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert routed == [] and _count(ForgetRequest) == 0


def test_what_it_passes_on_keeps_its_body_and_is_counted_once(client, model, routed, monkeypatch):
    """A whole class is left to the usual way after the fast path counted it: the route must not count it again
    (with three requests a minute, a second count would refuse the second request) nor try the hot path again."""
    monkeypatch.setenv("LETHE_RATE_LIMIT", "3/minute")
    reset_caches()
    assert client.get("/models/m1").status_code == 200  # the key back in the (reset) cache: one of the three
    tries: list[int] = []
    original = intake_fast.take_in_async

    async def counting(*args, **kwargs):
        tries.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(intake_fast, "take_in_async", counting)
    body = {"model_id": "m1", "forget_class": 3, "external_ref": "class-3"}
    answers = [client.post("/forget-requests", json=body) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 200]  # the second is the same external_ref again
    assert answers[0].json() == answers[1].json()
    assert len(tries) == 2 and routed == ["/models/m1", "/forget-requests", "/forget-requests"]
    refused = client.post("/forget-requests", json=body)
    assert refused.status_code == 429 and "3/minute" in refused.json()["detail"]
    with session_scope() as session:
        stored = session.execute(select(ForgetRequest)).scalar_one()
        assert (
            stored.external_ref == "class-3" and stored.n_ids > 0
        )  # the class's ids, from the replayed body
    assert _count(Job) == 0


@pytest.mark.parametrize(
    "headers, content",
    [
        ({"content-type": "text/plain"}, b'{"model_id": "m1", "forget_ids": [4, 1]}'),
        ({"content-type": "application/json"}, b'{"model_id": "m1", "forget_ids": ["x"]}'),
        ({"content-type": "application/json"}, b'{"model_id": "m1", "forget_ids": [4, 1], "bad": 1}'),
    ],
)
def test_what_it_does_not_judge_is_answered_by_the_route(client, model, routed, headers, content):
    answer = client.post("/forget-requests", content=content, headers=headers)
    assert answer.status_code == 422 and routed == ["/forget-requests"]
    assert _count(ForgetRequest) == 0


def test_on_the_embedded_default_it_leaves_every_post_to_the_route(embedded_client, routed, monkeypatch):
    """SQLite has no one-statement path: reading, parsing and counting first would only add to the route's work."""
    import api.fastpost

    with session_scope() as session:
        add_ready_model(session, "m1")
    assert embedded_client.get("/models/m1").status_code == 200  # the key in the tenant cache
    judged: list[str] = []
    counted = api.fastpost.retry_after

    async def spy(tenant: str) -> int | None:
        judged.append(tenant)
        return await counted(tenant)

    monkeypatch.setattr(api.fastpost, "retry_after", spy)
    for path, body in POSTS.items():
        assert embedded_client.post(path, json=body).status_code == 202
    assert routed == ["/models/m1", *POSTS] and judged == []
