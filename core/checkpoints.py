"""A model's checkpoint file as its owner downloads it: where it is, its name and its sha256."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache
from sqlalchemy.orm import Session

from core.artifacts import ArtifactMissing, LocalStore, get_store
from core.errors import Conflict
from core.purge import require_weights
from core.services import resolve_model
from core.tables import ModelStatus

_DIGESTS: LRUCache[tuple[str, int, int], str] = LRUCache(maxsize=1024)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Weights:
    """A ready model's safetensors file: what a download response is made of."""

    model_id: str
    path: Path | None
    """The file, when the store is a local folder (served with ranges); None for an object store."""
    filename: str
    sha256: str
    data: bytes | None = None
    """The checkpoint's bytes, read (and checksum-verified) from an object store."""


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per version of the file (a rewrite changes its mtime or size)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    with _LOCK:
        _DIGESTS[key] = digest.hexdigest()
    return digest.hexdigest()


def model_weights(session: Session, model_ref: str, tenant_id: str) -> Weights:
    """The checkpoint of a ready model; 409 naming why when there is none to give (training, failed, purged)."""
    model = resolve_model(session, model_ref, tenant_id)
    require_weights(model, "downloaded")
    if model.status != ModelStatus.ready or not model.checkpoint:
        raise Conflict(f"model {model_ref} has no weights to download: its status is {model.status}")
    filename = f"{model.name or model.id}.safetensors"
    gone = Conflict(f"model {model_ref} has no weights to download: its checkpoint is no longer stored")
    store = get_store()
    if isinstance(store, LocalStore):
        path = store.path(model.checkpoint)
        if not path.is_file():
            raise gone
        return Weights(model.id, path, filename, file_sha256(path))
    try:
        data = store.read_bytes(model.checkpoint)
    except ArtifactMissing:
        raise gone from None
    return Weights(model.id, None, filename, hashlib.sha256(data).hexdigest(), data)
