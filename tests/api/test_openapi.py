"""The OpenAPI document: every operation explained, errors sharing one schema, request bodies with examples."""

from __future__ import annotations

import pytest

from api.main import create_app


@pytest.fixture(scope="module")
def spec() -> dict:
    return create_app().openapi()


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def test_every_operation_has_a_summary_and_a_description(spec):
    for method, path, op in _operations(spec):
        assert op.get("summary") and op.get("description"), f"{method} {path}"


def test_errors_share_one_schema(spec):
    for method, path, op in _operations(spec):
        if path in ("/health", "/metrics", "/certificates/public-key"):  # public on purpose
            continue
        for code in ("401", "404", "422", "429", "503"):
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


def test_request_bodies_carry_examples(spec):
    for method, path, op in _operations(spec):
        if "requestBody" not in op:
            continue
        for media in op["requestBody"]["content"].values():
            schema = media["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            assert any("examples" in p for p in schema["properties"].values()), (method, path)
