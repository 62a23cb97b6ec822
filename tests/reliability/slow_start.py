"""Loaded with `celery worker --include`: every pool process takes a minute to start, as PyTorch's import
did beside a CPU hog. The worker's pool then cannot replace a process that dies."""

from __future__ import annotations

import time
from typing import Any

from celery.signals import worker_process_init


@worker_process_init.connect
def _slow(**_kw: Any) -> None:
    time.sleep(60)
