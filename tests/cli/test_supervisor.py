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


def test_the_worker_dies_with_lethe_up_even_when_it_is_killed(tmp_path):
    import subprocess
    import sys

    script = (
        "import time\n"
        "from cli.main import _Supervisor\n"
        f"s = _Supervisor(['sleep', '120']); s.start(); open({str(tmp_path / 'pid')!r}, 'w').write(str(s.proc.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the worker outlived its killed parent")
