"""Data sets cached per worker process: loading CIFAR-10 once per job would dominate short jobs."""

from __future__ import annotations

import json
from functools import lru_cache

from core.tables import Dataset
from ml.data import ArrayDataset, load_dataset


@lru_cache(maxsize=4)
def _load(kind: str, root: str | None, options_json: str) -> ArrayDataset:
    return load_dataset(kind, root, **json.loads(options_json))


def load_for(row: Dataset) -> ArrayDataset:
    return _load(row.kind, row.root, json.dumps(row.options or {}, sort_keys=True))
