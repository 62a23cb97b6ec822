"""`lethe up` keeps its worker alive: a worker process that dies is started again."""

from __future__ import annotations

import os
import signal
import time

from cli.main import _Supervisor


def test_a_dead_worker_is_started_again_and_stop_ends_it():
    sup = _Supervisor(["sleep", "60"])
    sup.start()
    first = sup.proc
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sup.proc is first and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sup.proc is not first and sup.proc.poll() is None
    second = sup.proc
    sup.stop()
    assert second.poll() is not None
    time.sleep(1.5)
    assert sup.proc is second  # stopping is not dying: nothing restarts it
