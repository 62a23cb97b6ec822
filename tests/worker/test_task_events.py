"""Celery task events reach a monitor (Flower) from a real worker, not only from the publisher."""

from __future__ import annotations

import threading
from collections import defaultdict

from core.db import session_scope
from core.queue import get_celery
from core.services import publish_jobs
from tests.utils import add_ready_model, drain


def test_a_real_worker_reports_each_task_from_received_to_succeeded(client):
    """The worker command line sets no -E: the app's worker_send_task_events has to switch events on."""
    with session_scope() as session:
        add_ready_model(session, "m1")
    r = client.post("/unlearn", json={"model_id": "m1", "forget_ids": [1], "method": "none"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    app = get_celery()
    seen: dict[str, list[str]] = defaultdict(list)
    subscribed = threading.Event()

    def on_event(event: dict) -> None:
        seen[event.get("uuid", "")].append(event["type"])
        if event["type"] == "task-sent" and event.get("uuid") == job_id:
            subscribed.set()
        if event["type"] == "task-succeeded" and event.get("uuid") == job_id:
            receiver.should_stop = True

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event})
        listener = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": 300}, daemon=True
        )
        listener.start()
        for _ in range(60):  # events are fire-and-forget: publish again until the listener is subscribed
            if subscribed.wait(0.5):
                break
            publish_jobs([job_id])
        assert subscribed.is_set()
        drain()  # the shared test worker runs the job (and drops the extra copies: the job has ended)
        listener.join(120)
        receiver.should_stop = True
    events = seen[job_id]
    assert {"task-received", "task-started", "task-succeeded"} <= set(events), events
    assert events.index("task-started") < events.index("task-succeeded")
