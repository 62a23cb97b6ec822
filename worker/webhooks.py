"""The worker's webhook sender: a thread in the worker's main process that sends due deliveries.

It runs beside the job pool rather than as a queued task, so a notification never waits behind a
long job; it imports no PyTorch (the main process must not, see worker/app.py).
"""

from __future__ import annotations

import logging
import threading

import httpx

from core.webhooks import deliver_due

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
"""How often an idle sender looks for due deliveries (a busy one goes on at once)."""


class DeliveryLoop:
    """Sends due webhook deliveries until stopped; a failing pass is logged and retried."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lethe-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        # Redirects are not followed: one could lead to an address the target check refused.
        with httpx.Client(follow_redirects=False) as http:
            while not self._stop.is_set():
                try:
                    sent = deliver_due(http)
                except Exception:
                    log.exception("webhook delivery pass failed")
                    sent = 0
                if not sent:
                    self._stop.wait(self.idle_seconds)
