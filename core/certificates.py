"""Deletion certificates: what was asked, what was done and how well it forgot, signed with Ed25519.

The signature covers the canonical JSON of every field but `signature` (keys sorted, separators "," and
":", UTF-8, no NaN or infinities), so anyone holding the service's public key can check a certificate
offline. The signing key is the PEM file LETHE_SIGNING_KEY_FILE names, or else one generated once into the
artifact store, which every API process of a deployment shares.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.artifacts import get_store
from core.batching import BATCH_KIND, batch_info
from core.errors import Conflict
from core.purge import checkpoint_sha256
from core.services import get_owned
from core.settings import get_settings
from core.tables import (
    AuditEvent,
    Evaluation,
    ForgetRequest,
    Job,
    JobStatus,
    Model,
    ModelStatus,
    ReferenceSet,
    utcnow,
)

FORMAT = "lethe.deletion-certificate/v1"
ALGORITHM = "Ed25519"
KEY_ARTIFACT = "keys/certificate-signing-ed25519.pem"
PARENT_EVENTS = ("purged", "purge_retried", "auto_purge_skipped")
"""Events of the parent model that belong in a request's timeline (its own training does not)."""


class VerificationError(Exception):
    """A certificate that does not verify; the message says why."""


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, compact separators, UTF-8."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# ---- keys -----------------------------------------------------------------------------------------


def signing_key() -> Ed25519PrivateKey:
    """The service's key: from LETHE_SIGNING_KEY_FILE, or generated once into the artifact store (a local
    folder or a bucket: every API host then signs with the same key)."""
    configured = get_settings().signing_key_file
    if configured:
        return _load_private(configured.expanduser().read_bytes())
    store = get_store()
    if not store.exists(KEY_ARTIFACT):
        # Of two processes racing, the first write wins and both read it back.
        store.create(
            KEY_ARTIFACT,
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    return _load_private(store.read_bytes(KEY_ARTIFACT))


@lru_cache(maxsize=4)
def _load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the signing key is a {type(key).__name__}, not an Ed25519 private key")
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_key_info(key: Ed25519PublicKey | None = None) -> dict[str, str]:
    """The public key as GET /certificates/public-key gives it."""
    key = key or signing_key().public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(key),
        "public_key": base64.b64encode(raw_public(key)).decode(),
        "pem": pem.decode(),
    }


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from a PEM, the JSON of GET /certificates/public-key, or its base64 raw bytes."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            raw = json.loads(text)["public_key"] if text.startswith("{") else text
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw, validate=True))
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError(f"not an Ed25519 public key (PEM, JSON or base64): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError(f"the public key is a {type(key).__name__}, not Ed25519")
    return key


# ---- signing and verifying ---------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinities: they become null and the strings "inf" / "-inf", as in results."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def sign(document: dict[str, Any]) -> dict[str, Any]:
    """The document with its `signature`: algorithm, key id, public key and the base64 signature value."""
    key = signing_key()
    body = json_safe({k: v for k, v in document.items() if k != "signature"})
    public = key.public_key()
    return {
        **body,
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key_id(public),
            "public_key": base64.b64encode(raw_public(public)).decode(),
            "value": base64.b64encode(key.sign(canonical(body))).decode(),
        },
    }


def verify(document: Any, trusted: Ed25519PublicKey | None = None) -> str:
    """The signing key's id when the certificate is intact; VerificationError saying why otherwise.

    With `trusted`, the certificate must be signed by that key; without, the key it carries is used, which
    proves it unmodified since signing but not who signed it (compare the key id with the service's)."""
    if not isinstance(document, dict) or not isinstance(document.get("signature"), dict):
        raise VerificationError("no signature: not a signed certificate")
    signature = document["signature"]
    if signature.get("algorithm") != ALGORITHM:
        raise VerificationError(f"unsupported signature algorithm {signature.get('algorithm')!r}")
    try:
        carried = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature["public_key"], validate=True))
        value = base64.b64decode(signature["value"], validate=True)
    except (KeyError, ValueError, TypeError) as exc:
        raise VerificationError(f"malformed signature: {exc}") from None
    if trusted is not None and raw_public(trusted) != raw_public(carried):
        raise VerificationError(f"signed by key {key_id(carried)}, not by the trusted key {key_id(trusted)}")
    body = {k: v for k, v in document.items() if k != "signature"}
    try:
        carried.verify(value, canonical(body))
    except InvalidSignature:
        raise VerificationError(
            "the signature does not match: the certificate was modified after signing"
        ) from None
    except ValueError as exc:
        raise VerificationError(f"the certificate cannot be put in canonical form: {exc}") from None
    return key_id(carried)


# ---- building ------------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC; SQLite hands back naive datetimes, which are UTC too."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def epsilon_meaning(results: dict[str, Any], n_models: int, delta: float) -> str:
    """One sentence a privacy officer can read next to the number."""
    eps = results.get("epsilon_hat")
    shown = (
        "infinite"
        if eps in ("inf", "Infinity")
        else (f"{eps:.3f}" if isinstance(eps, int | float) else "undefined")
    )
    return (
        f"epsilon-hat = {shown} (delta = {delta:g}): the median over the forgotten samples of how well the best "
        f"membership-inference test, fitted on {n_models} models retrained without the samples and {n_models} "
        "models unlearned with this method, tells the two groups apart, as the log of its likelihood ratio. "
        "0 means the unlearned models cannot be told from models that never saw the samples; larger values "
        "mean traces remain; infinite means some samples were perfectly separable with this many models."
    )


def _evaluation(session: Session, req: ForgetRequest, batch_evaluation: str | None) -> dict[str, Any] | None:
    """The newest scored evaluation of the request's method on its model and forget set, if any; for a
    batched request, the evaluation its policy queued beside the batch."""
    stmt = select(Evaluation).where(Evaluation.tenant_id == req.tenant_id)
    if batch_evaluation is not None:
        stmt = stmt.where(Evaluation.id == batch_evaluation)
    else:
        stmt = stmt.join(ReferenceSet, ReferenceSet.id == Evaluation.reference_set_id).where(
            Evaluation.model_id == req.model_id,
            Evaluation.method == req.method,
            ReferenceSet.forget_sha256 == req.ids_sha256,
        )
    rows = session.execute(stmt.order_by(Evaluation.created_at.desc())).scalars()
    evaluation = next((e for e in rows if e.results), None)  # scored: unscored rows hold SQL or JSON null
    if evaluation is None:
        return None
    results = evaluation.results or {}
    keep = ("epsilon_hat", "mean", "ci95", "n_samples", "n_reference", "n_unlearned", "n_infinite", "n_nan")
    return {
        "id": evaluation.id,
        "method": evaluation.method,
        "params": evaluation.params,
        "same_params": evaluation.params == req.params,
        "n_models": evaluation.n_models,
        "delta": evaluation.delta,
        **{k: results.get(k) for k in keep},
        **({"resolution": results["resolution"]} if "resolution" in results else {}),
        "meaning": epsilon_meaning(results, evaluation.n_models, evaluation.delta),
    }


def _model(model: Model) -> dict[str, Any]:
    return {
        "id": model.id,
        "name": model.name,
        "status": model.status,
        "made_by": model.made_by,
        "checkpoint_sha256": checkpoint_sha256(model),
        "n_forgotten": model.n_forgotten,
        "forgotten_sha256": model.forgotten_sha256,
    }


def _batch(session: Session, req: ForgetRequest, job: Job) -> dict[str, Any] | None:
    """For a request forgotten in a batch: the batch's job, the version it started from and the version that
    fulfilled it, with the batch's size; None for a request POST /unlearn ran on its own."""
    if job.kind != BATCH_KIND:
        return None
    info = batch_info(session, job)
    return {
        "job_id": job.id,
        "base_model_id": info["base_model_id"],
        "result_model_id": req.result_model_id,
        "n_requests": info["n_requests"],
        "n_ids": info["n_ids"],
        "evaluation_id": info["evaluation_id"],
    }


def build_certificate(session: Session, request_id: str, tenant_id: str) -> dict[str, Any]:
    """The unsigned certificate of a fulfilled request; Conflict while it is not fulfilled."""
    req = get_owned(session, ForgetRequest, request_id, tenant_id, "forget request")
    job = session.get(Job, req.job_id) if req.job_id else None
    if job is None or job.status != JobStatus.succeeded or req.result_model_id is None:
        state = job.status if job else "not scheduled"
        raise Conflict(
            f"forget request {request_id} is {state}: a deletion certificate is issued once it is fulfilled"
        )
    batch = _batch(session, req, job)
    # A batch forgets from the version it started from, the newest of the model's lineage then.
    parent = session.get(Model, batch["base_model_id"] if batch else req.model_id)
    child = session.get(Model, req.result_model_id)
    own = [req.id, job.id, child.id]
    events = session.execute(
        select(AuditEvent)
        .where(
            AuditEvent.tenant_id == tenant_id,
            or_(
                AuditEvent.object_id.in_(own),
                (AuditEvent.object_id == parent.id) & AuditEvent.event.in_(PARENT_EVENTS),
            ),
        )
        .order_by(AuditEvent.id)
    ).scalars()
    return {
        "certificate": FORMAT,
        "issued_at": iso(utcnow()),
        "tenant": tenant_id,
        "forget_request": {
            "id": req.id,
            "n_ids": req.n_ids,
            "ids_sha256": req.ids_sha256,
            "ids_sha256_of": "the sorted sample ids in decimal, comma-separated",
            "requested_by": req.requested_by,
            "received_at": iso(req.created_at),
        },
        "method": {"name": req.method, "params": req.params, "job_id": job.id},
        # "auto": the method Lethe chose, its params and score, and the search's trials.
        **({"auto": job.result["auto"]} if (job.result or {}).get("auto") else {}),
        "parent_model": {**_model(parent), "purged_at": iso(parent.purged_at)},
        "result_model": _model(child),
        "parent_purged": parent.status == ModelStatus.purged,
        "timeline": [
            {
                "at": iso(e.at),
                "object_type": e.object_type,
                "object_id": e.object_id,
                "event": e.event,
                "detail": e.detail,
            }
            for e in events
        ],
        "metrics": child.metrics or {},
        "evaluation": _evaluation(session, req, batch["evaluation_id"] if batch else None),
        "batch": batch,
    }


def certificate(session: Session, request_id: str, tenant_id: str) -> dict[str, Any]:
    """The signed certificate of a fulfilled forget request."""
    return sign(build_certificate(session, request_id, tenant_id))
