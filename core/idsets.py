"""Compact storage and hashing of sample-id sets (forget sets can hold tens of thousands of ids)."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

import numpy as np


def normalise(ids: Iterable[int]) -> np.ndarray:
    """Sorted, unique int64 ids."""
    return np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))


def encode(ids: Iterable[int]) -> bytes:
    """Sorted ids as zlib-compressed uint32 gaps: a 2% CIFAR-10 forget set takes about 1 KB."""
    arr = normalise(ids)
    if arr.size and (arr[0] < 0 or arr[-1] > np.iinfo(np.uint32).max):
        raise ValueError("sample ids must lie in [0, 2**32)")
    gaps = np.diff(arr, prepend=0).astype("<u4")
    return zlib.compress(gaps.tobytes(), 9)


def decode(blob: bytes | None) -> np.ndarray:
    """Inverse of encode: sorted int64 ids."""
    if not blob:
        return np.zeros(0, dtype=np.int64)
    gaps = np.frombuffer(zlib.decompress(blob), dtype="<u4").astype(np.int64)
    return np.cumsum(gaps)


def sha256(ids: Iterable[int]) -> str:
    """sha256 of the sorted unique ids written in decimal, comma-separated (reproducible by hand)."""
    arr = normalise(ids)
    return hashlib.sha256(",".join(map(str, arr.tolist())).encode()).hexdigest()
