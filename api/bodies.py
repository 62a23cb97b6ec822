"""JSON request bodies read on the event loop but parsed and validated in a worker thread.

A body may hold a million ids; parsing and validating it on the event loop would stall every other
request (polls included). Bodies are parsed strictly: `NaN` and `Infinity` are not JSON, and strings
holding a NUL character cannot be stored, so both are refused with a 422 before the model sees them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic_core
from annotated_types import MaxLen
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

SMALL_BODY = 16 * 1024
"""Bodies up to this size (about 2,000 ids) are parsed on the event loop, in well under a millisecond;
larger ones in a worker thread, so that a million ids never stall the other requests."""


def nul_at(value: Any, where: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where the first string (key or value) holding a NUL character is; None when there is none."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return (*where, key.replace("\x00", "\\u0000"))
            if (found := nul_at(item, (*where, key))) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str | dict | list) and (found := nul_at(item, (*where, i))) is not None:
                return found
    return None


def _too_long(model: type[BaseModel], data: Any) -> RequestValidationError | None:
    """A list longer than its field allows, found before anything walks or validates its million items."""
    if not isinstance(data, dict):
        return None
    for name, field in model.model_fields.items():
        value = data.get(field.alias or name)
        limit = next((m.max_length for m in field.metadata if isinstance(m, MaxLen)), None)
        if isinstance(value, list) and limit is not None and len(value) > limit:
            return _refuse((name,), f"List should have at most {limit} items, not {len(value)}", "too_long")
    return None


def _refuse(loc: tuple[str | int, ...], msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", *loc), "msg": msg, "type": kind}])


def parse_body(model: type[M], raw: bytes) -> M:
    """The body as `model`, or a RequestValidationError naming what is wrong (never echoing the input)."""
    try:
        data = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise _refuse(
            (), f"the body is not valid JSON (NaN and Infinity are not JSON): {exc}", "json_invalid"
        ) from None
    if (too_long := _too_long(model, data)) is not None:
        raise too_long
    if (where := nul_at(data)) is not None:
        raise _refuse(where, "strings may not contain the NUL character (\\u0000)", "string_nul")
    try:
        return model.model_validate(data, strict=True)  # as the schema says: no "3" for 3, no 1 for true
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
        ) from None


def json_body(model: type[M]) -> Any:
    """A dependency giving the request's JSON body as `model`, parsed off the event loop."""

    async def read(request: Request) -> M:
        return await run_in_threadpool(parse_body, model, await request.body())

    read.__name__ = f"read_{model.__name__}"
    return Depends(read)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a route that reads its body with json_body."""
    schema = model.model_json_schema()
    assert "$defs" not in schema, f"{model.__name__} nests models; inline schemas cannot hold them"
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
