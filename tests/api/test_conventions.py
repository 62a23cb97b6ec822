"""API conventions on both backends: cursor pagination on every list, RFC 3339 timestamps, X-Request-ID."""

from __future__ import annotations

import json
import logging
import re

import pytest

from core.db import session_scope
from tests.utils import add_ready_model

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def m1(any_client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    return any_client


def _walk_pages(client, path, limit, **query):
    seen, cursor, pages = [], None, 0
    while True:
        params = {**query, "limit": limit, **({"cursor": cursor} if cursor else {})}
        body = client.get(path, params=params).json()
        pages += 1
        seen += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages, body["count"]


def test_every_list_pages_past_its_first_page(m1):
    for i in range(7):
        assert (
            m1.post("/unlearn", json={"model_id": "m1", "forget_ids": [i], "method": "none"}).status_code
            == 202
        )
        m1.post("/evaluations", json={"model_id": "m1", "forget_ids": [i], "method": "none", "n_models": 1})
    jobs, pages, count = _walk_pages(m1, "/jobs", 3, kind="unlearn")
    assert count == 7 and pages == 3 and len({j["id"] for j in jobs}) == 7
    assert [j["created_at"] for j in jobs] == sorted((j["created_at"] for j in jobs), reverse=True)
    all_jobs, _, total = _walk_pages(m1, "/jobs", 500)
    assert len(all_jobs) == total > 7
    for path, limit, expected in (("/evaluations", 2, 7), ("/models", 1, 1), ("/datasets", 1, 1)):
        rows, pages, count = _walk_pages(m1, path, limit)
        assert len(rows) == count == expected and pages == -(-expected // limit), path
    assert m1.get("/scores", params={"limit": 1}).json() == {"data": [], "count": 0, "next_cursor": None}
    evaluations, _, _ = _walk_pages(m1, "/evaluations", 4)
    assert len({e["evaluation_id"] for e in evaluations}) == 7


@pytest.mark.parametrize("cursor", ["nonsense", "W10", "WyJ4Il0", "e30"])
def test_a_cursor_the_list_did_not_hand_out_is_422(m1, cursor):
    r = m1.get("/jobs", params={"cursor": cursor})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_timestamps_carry_a_time_zone_everywhere(m1):
    created = m1.post("/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "none"}).json()
    m1.post(f"/jobs/{created['job_id']}/cancel")
    replies = [
        m1.get(f"/jobs/{created['job_id']}").json(),  # the poll fast path
        m1.get(f"/jobs/{created['job_id']}", headers={"X-API-Key": "x"}).json(),  # 401, no stamps
        m1.get("/jobs").json(),
        m1.get("/models").json(),
        m1.get("/models/m1").json(),
        m1.get(f"/forget-requests/{created['forget_request_id']}").json(),
    ]
    stamps = re.findall(r'"(\d{4}-\d\d-\d\d[T ][^"]*)"', json.dumps(replies))
    assert len(stamps) >= 10
    assert all(RFC3339_UTC.match(s) for s in stamps), stamps


def test_every_response_carries_a_request_id(m1, caplog):
    mine = m1.get("/models", headers={"X-Request-ID": "trace-42.a"})
    assert mine.headers["X-Request-ID"] == "trace-42.a"
    generated = {m1.get("/models").headers["X-Request-ID"] for _ in range(3)}
    assert len(generated) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", g) for g in generated)
    for insane in ("a b", "x" * 200, "ü"):
        echoed = m1.get("/health", headers={"X-Request-ID": insane.encode("utf-8")}).headers["X-Request-ID"]
        assert echoed != insane and re.fullmatch(r"[0-9a-f]{32}", echoed)
    job = m1.post("/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "none"}).json()["job_id"]
    polls = [m1.get(f"/jobs/{job}", headers={"X-Request-ID": f"poll-{i}"}) for i in range(3)]  # the fast path
    assert [p.headers["X-Request-ID"] for p in polls] == ["poll-0", "poll-1", "poll-2"]
    assert len({p.content for p in polls}) == 1
    for answer in (
        m1.get("/jobs/nope"),
        m1.get("/health"),
        m1.get("/models", headers={"X-API-Key": "wrong"}),
        m1.post("/unlearn", content=b"{", headers={"content-type": "application/json"}),
        m1.get("/jobs/a%00b"),
    ):
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"]), answer


def test_json_log_lines_carry_the_request_id(m1, capsys):
    from core.logs import JsonFormatter

    logger = logging.getLogger("api.test")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    seen = []

    def log_inside(*args, **kwargs):
        logger.warning("inside the request")
        seen.append(True)

    import api.routes.catalog as catalog

    original = catalog.page
    try:
        catalog.page = lambda *a, **k: (log_inside(), original(*a, **k))[1]
        r = m1.get("/datasets", headers={"X-Request-ID": "req-7"})
    finally:
        catalog.page = original
        logger.removeHandler(handler)
    assert r.status_code == 200 and seen
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if "inside the request" in line
    ]
    assert lines and lines[0]["request_id"] == "req-7"


def test_the_client_pages_through_a_list(m1):
    from client.client import Client
    from client.models import JobList

    for i in range(5):
        m1.post("/unlearn", json={"model_id": "m1", "forget_ids": [i], "method": "none"})
    with Client("http://testserver", api_key=m1.headers["X-API-Key"], transport=m1._transport) as api:
        first = api.list_jobs(limit=2)
        assert len(first.data) == 2 and first.count == 5 and first.next_cursor
        second = api.list_jobs(limit=2, cursor=first.next_cursor)
        assert {j.id for j in first.data}.isdisjoint(j.id for j in second.data)
        every = list(api.pages("/jobs", JobList, limit=2))
        assert len({j.id for j in every}) == 5
        assert [d.name for d in api.list_datasets()] == ["digits"]
        assert api.get_job(every[0].id).created_at.tzinfo is not None
