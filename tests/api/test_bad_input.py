"""Bad input gets a fast, small 4xx on both backends, never a 500: the inputs that once broke the service."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

import api.bodies
from core.db import session_scope
from core.tables import ForgetRequest, Job, Model, ModelStatus
from tests.utils import add_ready_model

POSTS = {
    "/unlearn": {"model_id": "m1", "forget_ids": [1], "method": "none"},
    "/references": {"model_id": "m1", "forget_ids": [1], "n_models": 1},
    "/evaluations": {"model_id": "m1", "forget_ids": [1], "method": "none", "n_models": 1},
    "/studies": {"model_id": "m1", "forget_ids": [1], "methods": ["none"], "n_models": 1},
}


@pytest.fixture
def m1(any_client):
    with session_scope() as session:
        add_ready_model(session, "m1")
    return any_client


def _stored() -> tuple[int, int]:
    with session_scope() as session:
        return (
            session.execute(select(func.count()).select_from(Job)).scalar_one(),
            session.execute(select(func.count()).select_from(ForgetRequest)).scalar_one(),
        )


@pytest.mark.parametrize("path", list(POSTS))
@pytest.mark.parametrize("bad_id", [2**63, 2**64 + 5, 2**31])
def test_huge_ids_are_422(m1, path, bad_id):
    r = m1.post(path, json={**POSTS[path], "forget_ids": [1, bad_id]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "forget_ids", 1]
    assert _stored() == (0, 0)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_422(m1, literal):
    body = '{"model_id": "m1", "forget_ids": [1], "method": "none", "n_models": 1, "delta": LIT}'.replace(
        "LIT", literal
    )
    r = m1.post("/evaluations", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body"] and "not valid JSON" in r.json()["detail"][0]["msg"]
    nested = '{"model_id": "m1", "forget_ids": [1], "method": "finetune", "params": {"lr": LIT}}'.replace(
        "LIT", literal
    )
    r = m1.post("/unlearn", content=nested, headers={"content-type": "application/json"})
    assert r.status_code == 422 and json.loads(r.text)["detail"]
    assert _stored() == (0, 0)


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/unlearn", {**POSTS["/unlearn"], "requested_by": "a\x00b"}, ["body", "requested_by"]),
        ("/unlearn", {**POSTS["/unlearn"], "model_id": "m\x001"}, ["body", "model_id"]),
        ("/unlearn", {**POSTS["/unlearn"], "params": {"x\x00": 1}}, ["body", "params", "x\\u0000"]),
        (
            "/unlearn",
            {**POSTS["/unlearn"], "method": "finetune", "params": {"lr": "\x00"}},
            ["body", "params", "lr"],
        ),
        ("/models", {"dataset": "dig\x00its"}, ["body", "dataset"]),
        (
            "/references",
            {**POSTS["/references"], "recipe": {"epochs": ["\x00"]}},
            ["body", "recipe", "epochs", 0],
        ),
    ],
)
def test_nul_in_a_body_string_is_422(m1, path, body, loc):
    r = m1.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize(
    "url",
    [
        "/models/m%001",
        "/jobs/a%00b",
        "/jobs/a%00b/cancel",
        "/jobs?kind=a%00",
        "/evaluations?study_id=%00",
        "/?x=%00",
    ],
)
def test_nul_in_a_path_or_query_is_422(m1, url):
    method = "POST" if url.endswith("/cancel") else "GET"
    r = m1.request(method, url)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["type"] in ("string_nul", "string_pattern_mismatch")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/models", {"dataset": "digits", "seed": 2**40}),
        ("/models", {"dataset": "digits", "seed": 2**70}),
        ("/models", {"dataset": "digits", "seed": -1}),
        ("/studies", {**POSTS["/studies"], "seed": -1}),
        ("/studies", {**POSTS["/studies"], "seed": 2**70}),
        ("/unlearn", {**POSTS["/unlearn"], "seed": 2**70}),
        ("/unlearn", {**POSTS["/unlearn"], "seed": 2**32}),
        ("/unlearn", {"model_id": "m1", "method": "none", "forget_class": 2**40}),
    ],
)
def test_out_of_range_integers_are_422(m1, path, body):
    r = m1.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][1] in ("seed", "forget_class")
    assert _stored() == (0, 0)


def _request_schemas(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                yield f"{method} {path} {param['name']}", param["schema"]
            for media in op.get("requestBody", {}).get("content", {}).values():
                yield f"{method} {path} body", media["schema"]


def _walk(schema, where):
    if isinstance(schema, dict):
        yield where, schema
        for key, value in schema.items():
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _walk(value, f"{where}[{i}]")


def test_every_integer_and_list_of_a_request_is_bounded_in_the_openapi_document(any_client):
    spec = any_client.get("/openapi.json").json()
    seen = {"integer": 0, "array": 0}
    for name, schema in _request_schemas(spec):
        for where, node in _walk(schema, name):
            if node.get("type") == "integer":
                seen["integer"] += 1
                assert "minimum" in node and node.get("maximum", 2**63) <= 2**31 - 1, where
            if node.get("type") == "array":
                seen["array"] += 1
                assert node.get("maxItems", 2**63) <= 1_000_000, where
    assert seen["integer"] >= 10 and seen["array"] >= 4, seen


def test_a_million_and_one_ids_get_a_short_422_parsed_off_the_event_loop(m1, monkeypatch):
    """The body is parsed and validated in a worker thread (no running event loop there), and the answer
    names the field without echoing the 8 MB of input."""
    threads_with_a_loop = []
    parse = api.bodies.parse_body

    def watched(model, raw):
        try:
            asyncio.get_running_loop()
            threads_with_a_loop.append(True)
        except RuntimeError:
            threads_with_a_loop.append(False)
        return parse(model, raw)

    monkeypatch.setattr(api.bodies, "parse_body", watched)
    ids = list(range(1_000_001))
    r = m1.post("/unlearn", json={"model_id": "m1", "forget_ids": ids, "method": "none"})
    assert r.status_code == 422
    assert len(r.content) < 1000, r.content[:300]
    assert (
        r.json()["detail"][0]["loc"] == ["body", "forget_ids"] and "1000000" in r.json()["detail"][0]["msg"]
    )
    assert threads_with_a_loop == [False]


def test_forgetting_every_training_id_is_422(m1):
    everything = list(range(1438))  # digits' training split
    for path in ("/unlearn", "/evaluations", "/references", "/studies"):
        r = m1.post(path, json={**POSTS[path], "forget_ids": everything})
        assert r.status_code == 422, (path, r.text)
        assert "nothing would be left to train on" in r.json()["detail"][0]["msg"]
    # Together with what the model already forgot, too.
    from core import idsets

    with session_scope() as session:
        model = session.execute(select(Model).where(Model.name == "m1")).scalar_one()
        model.forgotten_ids = idsets.encode(range(1, 1438))
    r = m1.post("/unlearn", json={**POSTS["/unlearn"], "forget_ids": [0]})
    assert r.status_code == 422 and "already forgotten" in r.json()["detail"][0]["msg"]
    assert _stored() == (0, 0)


def test_a_model_that_is_not_ready_is_409_everywhere_after_the_body_is_validated(m1):
    with session_scope() as session:
        session.execute(select(Model).where(Model.name == "m1")).scalar_one().status = ModelStatus.training
    for path, body in POSTS.items():
        r = m1.post(path, json=body)
        assert r.status_code == 409, (path, r.text)
        assert "training, not ready" in r.json()["detail"]
        bad = m1.post(path, json={**body, "forget_ids": [5000]})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "forget_ids"], path
    assert _stored() == (0, 0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/unlearn", {**POSTS["/unlearn"], "forget_class": 1}),
        ("/unlearn", {"model_id": "m1", "method": "none"}),
        ("/unlearn", {**POSTS["/unlearn"], "forget_ids": None}),
        ("/references", {**POSTS["/references"], "dataset": "digits"}),
        ("/studies", {**POSTS["/studies"], "forget_fraction": 0.1}),
        ("/unlearn", {**POSTS["/unlearn"], "seed": "5"}),
        ("/unlearn", {**POSTS["/unlearn"], "seed": True}),
        ("/evaluations", {**POSTS["/evaluations"], "n_models": 1.5}),
    ],
)
def test_what_the_schema_refuses_is_refused(m1, path, body):
    """Exactly one of two alternatives, and JSON types as the schema states them (no "5" for 5)."""
    r = m1.post(path, json=body)
    assert r.status_code == 422, r.text
    assert _stored() == (0, 0)


def test_integral_numbers_are_integers_as_json_schema_says(m1):
    r = m1.post("/unlearn", json={**POSTS["/unlearn"], "forget_ids": [1.0, 2], "seed": 3.0})
    assert r.status_code == 202, r.text


def test_405_names_every_method_of_the_path(m1):
    r = m1.request("OPTIONS", "/models")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
    r = m1.delete("/evaluations")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"


@pytest.mark.parametrize("arch", ['{"width": NaN}', '{"form": "a\\u0000b"}', "{not json"])
def test_an_uploads_arch_is_strict_json_too(m1, arch):
    r = m1.post("/models", data={"dataset": "digits", "arch": arch}, files={"file": ("m.safetensors", b"x")})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "arch"], r.text
