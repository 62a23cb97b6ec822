"""Jobs at once: LETHE_WORKER_CONCURRENCY reaches `lethe up`'s worker, a bare Celery worker and compose."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from cli.main import worker_command
from tests.conftest import REPO
from tests.utils import configure


def _concurrency(cmd: list[str]) -> int:
    return int(cmd[cmd.index("--concurrency") + 1])


def test_the_worker_command_takes_its_concurrency_from_the_setting(monkeypatch, tmp_path):
    configure(monkeypatch, home=tmp_path)
    assert _concurrency(worker_command()) == 1
    configure(monkeypatch, home=tmp_path, worker_concurrency=3)
    assert _concurrency(worker_command()) == 3
    assert _concurrency(worker_command(concurrency=2)) == 2  # `lethe up --concurrency 2`


def test_a_bare_celery_worker_gets_the_setting_and_its_parent_never_loads_torch(tmp_path):
    """Pool processes fork from the parent: CUDA must first be touched in them, never in the parent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update({"LETHE_HOME": str(tmp_path), "LETHE_WORKER_CONCURRENCY": "3"})
    script = "import sys, worker.app as w; print(w.app.conf.worker_concurrency, 'torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "False"]


def test_compose_sets_the_workers_concurrency_through_the_setting():
    worker = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["worker"]
    assert "--concurrency" not in worker["command"]  # Celery reads it from LETHE_WORKER_CONCURRENCY
    assert int(worker["environment"]["LETHE_WORKER_CONCURRENCY"]) >= 2
    assert worker["environment"]["LETHE_DEVICE"] == "auto"  # the shared settings are still merged in
    cpu = (REPO / "docker-compose.cpu.yml").read_text()
    assert 'LETHE_WORKER_CONCURRENCY: "1"' in cpu


def test_the_worker_serves_the_forget_queue_first_everywhere(monkeypatch, tmp_path):
    """`lethe up` names every queue, forget requests first; compose's worker serves every declared queue."""
    configure(monkeypatch, home=tmp_path, queue="base")
    cmd = worker_command()
    assert cmd[cmd.index("--queues") + 1] == "base.forget,base,base.evaluate"
    worker = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["worker"]
    assert "--queues" not in worker["command"] and "-Q" not in worker["command"]
    assert worker["environment"]["LETHE_QUEUE"] == "lethe"
