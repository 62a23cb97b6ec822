"""A model's checkpoint file as its owner downloads it: where it is, its name and its sha256."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache
from sqlalchemy.orm import Session

from core.artifacts import get_store
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
    path: Path
    filename: str
    sha256: str


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
    path = get_store().path(model.checkpoint)
    if not path.is_file():
        raise Conflict(f"model {model_ref} has no weights to download: its checkpoint is no longer stored")
    return Weights(model.id, path, f"{model.name or model.id}.safetensors", file_sha256(path))
