"""Artifact store for checkpoints and arrays: a local folder (a shared volume when there are many workers)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from core.settings import get_settings


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in NumPy's .npy format, without pickles."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


class ArtifactStore:
    """Keys are relative POSIX paths such as "models/<id>/model.safetensors"; writes are atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        rel = PurePosixPath(key)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"artifact key {key!r} must be a relative path inside the store")
        return self.root.joinpath(*rel.parts)

    def write_bytes(self, key: str, data: bytes) -> Path:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write_array(self, key: str, array: np.ndarray) -> str:
        """Store an array as .npy (no pickles); returns the key."""
        self.write_bytes(key, npy_bytes(array))
        return key

    def read_array(self, key: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(key)), allow_pickle=False)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove an artifact (and its folder once empty); False when it was already gone."""
        target = self.path(key)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            target.parent.rmdir()
        return True


def get_store() -> ArtifactStore:
    settings = get_settings()
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    return ArtifactStore(settings.artifacts)
