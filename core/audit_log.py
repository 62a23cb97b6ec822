"""The audit trail exported for a privacy team's own records: JSON lines or CSV, by time range, in pages."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.certificates import iso
from core.tables import AuditEvent

COLUMNS = ("id", "at", "tenant", "object_type", "object_id", "event", "detail")


def events(
    session: Session,
    tenant_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    after_id: int,
    limit: int,
    object_type: str | None = None,
) -> list[dict[str, Any]]:
    """The tenant's events in order of recording, `since` <= at < `until`, after the event `after_id`."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.id > after_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.at < until)
    if object_type is not None:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    rows = session.execute(stmt.order_by(AuditEvent.id).limit(limit)).scalars()
    return [
        {
            "id": e.id,
            "at": iso(e.at),
            "tenant": e.tenant_id,
            "object_type": e.object_type,
            "object_id": e.object_id,
            "event": e.event,
            "detail": e.detail,
        }
        for e in rows
    ]


def as_jsonl(rows: list[dict[str, Any]]) -> str:
    """One JSON object per line, keys sorted."""
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in rows)


def as_csv(rows: list[dict[str, Any]]) -> str:
    """A header and one row per event; `detail` is its JSON."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([*(r[c] for c in COLUMNS[:-1]), json.dumps(r["detail"], sort_keys=True)])
    return buf.getvalue()


FORMATS: dict[str, tuple[str, Callable[[list[dict[str, Any]]], str]]] = {
    "jsonl": ("application/x-ndjson", as_jsonl),
    "csv": ("text/csv; charset=utf-8", as_csv),
}
"""Export formats by name: media type and writer."""
