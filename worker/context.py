"""What a job handler gets: its job's id and params, throttled progress reporting, the stop flag, a heartbeat.

While the context is entered, every training run of the job (train, retrain, reference sets, the methods'
own training) compiles with torch.compile when the context says so (LETHE_TORCH_COMPILE on a CUDA device).
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import OperationalError

from core import jobs
from core.db import session_scope
from core.settings import get_settings
from ml.trainer import compile_by_default
from worker import shutdown

REPORT_EVERY_S = 0.5


@dataclass
class JobContext:
    job_id: str
    kind: str
    params: dict[str, Any]
    device: str
    torch_compile: bool = False
    """Train under torch.compile: the fit calls inside `with ctx:` that do not choose compile themselves."""
    started: float = field(default_factory=time.monotonic)
    _last_report: float = 0.0
    _cancel: bool = False
    _stop_beat: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None
    _compiling: AbstractContextManager[None] | None = None

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
        try:
            with session_scope() as session:
                self._cancel = jobs.report_progress(session, self.job_id, fraction, info) or self._cancel
        except OperationalError:  # the database is briefly away: the job goes on, the next report catches up
            self._last_report = now - REPORT_EVERY_S

    def should_stop(self) -> bool:
        """Checked every training step; refreshed by progress reports and by the heartbeat."""
        return self._cancel or shutdown.stopping()

    @property
    def handing_back(self) -> bool:
        """Stopped because the worker shuts down, not because someone cancelled the job."""
        return shutdown.stopping() and not self._cancel

    def __enter__(self) -> JobContext:
        """Beat while the job runs, so a job between progress reports is never taken for a dead one."""
        self._compiling = compile_by_default(self.torch_compile)
        self._compiling.__enter__()
        interval = get_settings().heartbeat_seconds
        self._beat = threading.Thread(
            target=self._beat_loop, args=(interval,), daemon=True, name=f"beat-{self.job_id}"
        )
        self._beat.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop_beat.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        if self._compiling is not None:
            self._compiling.__exit__(None, None, None)
            self._compiling = None

    def _beat_loop(self, interval: float) -> None:
        while not self._stop_beat.wait(interval):
            try:
                with session_scope() as session:
                    self._cancel = jobs.heartbeat(session, self.job_id) or self._cancel
            except Exception:  # a missed beat is retried; the job itself must go on
                continue
