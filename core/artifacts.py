"""Artifact store for checkpoints and arrays: a local folder by default, or an S3-compatible object store
chosen by LETHE_ARTIFACT_URL, so the API and workers on different hosts share no volume."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np

from core.settings import Settings, get_settings


class ArtifactError(OSError):
    """An artifact could not be stored, read back intact or removed (the store's message says why)."""


class ArtifactMissing(ArtifactError, FileNotFoundError):
    """No artifact under this key."""


class ArtifactCorrupt(ArtifactError):
    """The bytes read back do not match the checksum recorded when they were written."""


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in NumPy's .npy format, without pickles."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def key_parts(key: str) -> tuple[str, ...]:
    """A key's path segments; keys must stay inside the store (no absolute paths, no "..")."""
    rel = PurePosixPath(key)
    if not key or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"artifact key {key!r} must be a relative path inside the store")
    return rel.parts


class ArtifactStore(ABC):
    """Keys are relative POSIX paths such as "models/<id>/model.safetensors"; a write is all or nothing."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> str:
        """Store data under key, replacing what was there; returns the key."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The bytes under key; ArtifactMissing when there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Store data under key only if nothing is there; True when this call stored it (the first wins)."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove an artifact; False when it was already gone."""

    def write_array(self, key: str, array: np.ndarray) -> str:
        """Store an array as .npy (no pickles); returns the key."""
        return self.write_bytes(key, npy_bytes(array))

    def read_array(self, key: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(key)), allow_pickle=False)


class LocalStore(ArtifactStore):
    """A folder (one host, or a shared volume); a temporary file renamed into place makes writes atomic."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key_parts(key))

    def write_bytes(self, key: str, data: bytes) -> str:
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
        return key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactMissing(f"artifact {key!r} not found in {self.root}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def create(self, key: str, data: bytes) -> bool:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")  # mode 0600, kept by the link
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

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


def _local(settings: Settings) -> ArtifactStore:
    url = urlsplit(settings.artifact_url)
    root = Path(url.path).expanduser().resolve() if url.path else settings.artifacts
    root.mkdir(parents=True, exist_ok=True)
    return LocalStore(root)


def _s3(settings: Settings) -> ArtifactStore:
    from core.objectstore import S3Store  # boto3 loads only where the object store is used

    return S3Store.from_settings(settings)


STORES: dict[str, Callable[[Settings], ArtifactStore]] = {"": _local, "file": _local, "s3": _s3}
"""LETHE_ARTIFACT_URL scheme -> store factory; no URL means the local folder (LETHE_ARTIFACT_DIR)."""


_current: tuple[Settings, int, ArtifactStore] | None = None


def get_store() -> ArtifactStore:
    """The configured store, made once per settings and process (a client made before a fork stays there)."""
    global _current
    settings, pid = get_settings(), os.getpid()
    if _current is None or _current[0] is not settings or _current[1] != pid:
        scheme = urlsplit(settings.artifact_url).scheme
        if scheme not in STORES:
            raise ValueError(
                f"LETHE_ARTIFACT_URL {settings.artifact_url!r}: scheme {scheme!r} is not one of "
                f"{sorted(s for s in STORES if s)}"
            )
        _current = (settings, pid, STORES[scheme](settings))
    return _current[2]
