"""Cursor pagination for every list: `limit` and an opaque `cursor`; each page names the next one.

A cursor is the sort key of the last row served (base64url JSON), so a page is one indexed range read
however deep the client goes, and rows created meanwhile neither repeat nor shift later pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=500,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="`next_cursor` of the previous page; omit for the first page",
    ),
]


def _encode(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _bad_cursor() -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", "cursor"), "msg": "not a cursor this list handed out", "type": "value_error"}]
    )


def _decode(cursor: str, keys: list[InstrumentedAttribute]) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError(cursor)
        out = []
        for key, value in zip(keys, values, strict=True):
            if not isinstance(value, str):
                raise ValueError(cursor)
            out.append(datetime.fromisoformat(value) if key.type.python_type is datetime else value)
        return out
    except (ValueError, binascii.Error, UnicodeDecodeError, NotImplementedError):
        raise _bad_cursor() from None


def _after(keys: list[InstrumentedAttribute], values: list[Any], descending: bool) -> Any:
    """Rows strictly after the cursor in the list's order (keys compared lexicographically)."""
    terms = []
    for i, key in enumerate(keys):
        step = key < values[i] if descending else key > values[i]
        terms.append(and_(*(k == v for k, v in zip(keys[:i], values[:i], strict=True)), step))
    return or_(*terms)


def page(
    session: Session,
    stmt: Select[Any],
    keys: list[InstrumentedAttribute],
    *,
    limit: int,
    cursor: str | None,
    descending: bool,
) -> tuple[list[Any], int, str | None]:
    """One page of `stmt` ordered by `keys` (the last one unique): rows, the count of all matches, next cursor."""
    total = session.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    if cursor is not None:
        stmt = stmt.where(_after(keys, _decode(cursor, keys), descending))
    order = [k.desc() if descending else k.asc() for k in keys]
    rows = list(session.execute(stmt.order_by(*order).limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, total, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, total, _encode([getattr(last, k.key) for k in keys])
