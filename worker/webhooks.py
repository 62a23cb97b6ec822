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
MAX_ERROR_WAIT = 60.0
"""While the database is unreachable, the waits between passes double up to this."""


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
        failures = 0
        with httpx.Client(follow_redirects=False) as http:
            while not self._stop.is_set():
                try:
                    sent, failures = deliver_due(http), 0
                except Exception as exc:  # a database outage: the deliveries wait in it, nothing is lost
                    failures += 1
                    log.warning("webhook delivery pass failed (%s: %s)", type(exc).__name__, exc)
                    sent = 0
                if not sent:
                    self._stop.wait(min(MAX_ERROR_WAIT, self.idle_seconds * 2**failures))
