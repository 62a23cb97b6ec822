"""Retiring checkpoints that still hold forgotten samples: a purged model's weights are deleted from the
artifact store; its row, lineage, checksum and audit trail stay.

The weights are deleted only once the transaction that marks the model purged has committed, so a purge
that fails to commit leaves nothing half-done, and one whose file could not be deleted is retried by
purging again.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from core import services
from core.artifacts import get_store
from core.errors import Conflict
from core.jobs import audit
from core.tables import FINISHED, Job, Model, ModelStatus, TenantSettings, utcnow

log = logging.getLogger(__name__)

READERS = ("unlearn", "evaluate", "study")
"""Job kinds that read the checkpoint of their model (an evaluation's runs wait under its job)."""
PENDING = "lethe_purge_keys"


def require_weights(model: Model, action: str) -> None:
    """Conflict saying why, when the model's weights were purged (`action`: "unlearned", "downloaded", ...)."""
    if model.status == ModelStatus.purged:
        when = f" at {model.purged_at:%Y-%m-%d %H:%M:%S} UTC" if model.purged_at else ""
        raise Conflict(
            f"model {model.name or model.id!r} was purged{when}: its weights were deleted, so it cannot be "
            f"{action}; its row, lineage, checksum and audit trail remain (use a model derived from it)"
        )


def checkpoint_sha256(model: Model) -> str | None:
    """The checkpoint's sha256: stored with the model, or read from the file for models made before it was."""
    if model.checkpoint_sha256 is None and model.checkpoint and model.status != ModelStatus.purged:
        store = get_store()
        if store.exists(model.checkpoint):
            return hashlib.sha256(store.read_bytes(model.checkpoint)).hexdigest()
    return model.checkpoint_sha256


def readers(session: Session, model_id: str, *, besides: str | None = None) -> list[Job]:
    """Unfinished jobs that read this model's weights (other than `besides`)."""
    rows = session.execute(
        select(Job).where(Job.model_id == model_id, Job.kind.in_(READERS), Job.status.not_in(list(FINISHED)))
    ).scalars()
    return [j for j in rows if j.id != besides]


def purge_model(session: Session, model_ref: str, tenant_id: str) -> Model:
    """Purge on request: Conflict when the model has no weights to purge or a job still reads them."""
    model = services.resolve_model(session, model_ref, tenant_id)
    if model.status == ModelStatus.purged:
        if model.checkpoint and get_store().exists(model.checkpoint):
            audit(session, "model", model.id, "purge_retried", tenant_id)
            _delete_after_commit(session, model.checkpoint)
            return model
        require_weights(model, "purged again")
    if model.status != ModelStatus.ready:
        raise Conflict(f"model {model_ref!r} is {model.status}: only a ready model's weights can be purged")
    busy = readers(session, model.id)
    if busy:
        raise Conflict(
            f"job {busy[0].id} ({busy[0].kind}, {busy[0].status}) still reads this model's weights: "
            "wait for it to end or cancel it, then purge"
        )
    _purge(session, model, reason="requested")
    return model


def _purge(session: Session, model: Model, *, reason: str, **detail: Any) -> None:
    model.checkpoint_sha256 = checkpoint_sha256(model)
    model.status = ModelStatus.purged
    model.purged_at = utcnow()
    audit(
        session,
        "model",
        model.id,
        "purged",
        model.tenant_id,
        reason=reason,
        checkpoint_sha256=model.checkpoint_sha256,
        **detail,
    )
    if model.checkpoint:
        _delete_after_commit(session, model.checkpoint)


def auto_purge_parent(session: Session, parent_id: str, child_id: str, job_id: str) -> None:
    """Once an unlearned child is ready, purge its parent if the tenant asked for it; a parent still read by
    another job is left as it is, with an audit event saying why."""
    parent = session.get(Model, parent_id)
    if parent is None or parent.status != ModelStatus.ready:
        return
    if not tenant_settings(session, parent.tenant_id).auto_purge_parents:
        return
    busy = readers(session, parent_id, besides=job_id)
    if busy:
        audit(
            session,
            "model",
            parent_id,
            "auto_purge_skipped",
            parent.tenant_id,
            child_id=child_id,
            reason=f"job {busy[0].id} ({busy[0].kind}) still reads its weights; purge it when that ends",
        )
        return
    _purge(session, parent, reason="auto_purge_parents", child_id=child_id)


def tenant_settings(session: Session, tenant_id: str) -> TenantSettings:
    """The tenant's settings; every default for a tenant that never set one (nothing is written)."""
    row = session.get(TenantSettings, tenant_id)
    return row if row is not None else TenantSettings(tenant_id=tenant_id, auto_purge_parents=False)


def update_tenant_settings(session: Session, tenant_id: str, changes: dict[str, Any]) -> TenantSettings:
    """Apply the given settings (names are TenantSettings columns) and audit what changed."""
    row = session.get(TenantSettings, tenant_id)
    if row is None:
        row = TenantSettings(tenant_id=tenant_id, auto_purge_parents=False)
        session.add(row)
    changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
    for name, value in changed.items():
        setattr(row, name, value)
    if changed:
        row.updated_at = utcnow()
        audit(session, "tenant", tenant_id, "settings_changed", tenant_id, **changed)
    session.flush()
    return row


def _delete_after_commit(session: Session, key: str) -> None:
    """Delete the artifact when (and only if) the session's transaction commits."""
    pending = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = []
        event.listen(session, "after_commit", _delete_pending)
        event.listen(session, "after_rollback", _forget_pending)
    pending.append(key)


def _delete_pending(session: Session) -> None:
    keys, session.info[PENDING] = session.info.get(PENDING, []), []
    store = get_store()
    for key in keys:
        try:
            store.delete(key)
        except OSError:
            log.exception("deleting purged weights %s failed; purge the model again to retry", key)


def _forget_pending(session: Session) -> None:
    session.info[PENDING] = []
