"""What a job handler gets: its job row's id and params, throttled progress reporting and the stop flag."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from core import jobs
from core.db import session_scope

REPORT_EVERY_S = 0.5


@dataclass
class JobContext:
    job_id: str
    kind: str
    params: dict[str, Any]
    device: str
    started: float = field(default_factory=time.monotonic)
    _last_report: float = 0.0
    _cancel: bool = False

    def progress(self, event: Any) -> None:
        """Record a trainer ProgressEvent (or anything with .fraction) at most every REPORT_EVERY_S."""
        now = time.monotonic()
        fraction = float(getattr(event, "fraction", 0.0))
        if now - self._last_report < REPORT_EVERY_S and fraction < 1.0:
            return
        self._last_report = now
        info = {
            k: getattr(event, k)
            for k in ("stage", "epoch", "epochs", "step", "steps", "loss", "accuracy")
            if getattr(event, k, None) is not None
        }
        elapsed = now - self.started
        info["elapsed_seconds"] = round(elapsed, 2)
        if 0.0 < fraction < 1.0:
            info["eta_seconds"] = round(elapsed / fraction * (1.0 - fraction), 1)
        with session_scope() as session:
            self._cancel = jobs.report_progress(session, self.job_id, fraction, info)

    def should_stop(self) -> bool:
        """Checked every training step; the flag is refreshed with each progress report."""
        return self._cancel
