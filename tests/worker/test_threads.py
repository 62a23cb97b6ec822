"""A worker's pool processes share the host's cores: each takes its share of torch's threads, not all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worker import app as worker_app
from worker.threads import JOBS_AT_ONCE, note_jobs_at_once, pool_threads


@pytest.fixture
def jobs_at_once():
    before = JOBS_AT_ONCE[0]
    yield
    JOBS_AT_ONCE[0] = before


@pytest.mark.parametrize(
    ("setting", "default", "jobs", "expected"),
    [
        (0, 8, 1, 8),  # one job at a time: torch's default
        (0, 8, 4, 2),  # four at once: a quarter each
        (0, 2, 4, 1),  # more jobs than cores: one thread each, never 0
        (0, 6, 4, 1),
        (3, 8, 4, 3),  # LETHE_TORCH_THREADS wins
    ],
)
def test_each_pool_process_takes_its_share_of_the_cores(setting, default, jobs, expected) -> None:
    assert pool_threads(setting, default, jobs) == expected


class FakeWorker:
    concurrency = 3


def test_the_main_process_notes_its_concurrency_before_the_pool_forks(jobs_at_once) -> None:
    worker_app._note_jobs_at_once(sender=FakeWorker())  # connected to Celery's worker_init
    assert JOBS_AT_ONCE[0] == 3
    note_jobs_at_once("5")
    assert JOBS_AT_ONCE[0] == 5
    note_jobs_at_once(0)  # Celery's 0: one process per CPU
    assert JOBS_AT_ONCE[0] == max(1, os.cpu_count() or 1)
    note_jobs_at_once("auto")
    note_jobs_at_once(None)
    assert JOBS_AT_ONCE[0] == max(1, os.cpu_count() or 1)


PROCESS = """
import json, sys
from worker.threads import JOBS_AT_ONCE
JOBS_AT_ONCE[0] = int(sys.argv[1])
import torch
default = torch.get_num_threads()
from worker.runner import _prepare_process
_prepare_process()
print(json.dumps({"default": default, "threads": torch.get_num_threads()}))
"""


@pytest.mark.parametrize(("jobs", "setting"), [(64, ""), (1, ""), (64, "3")])
def test_a_pool_process_sets_its_threads_before_its_first_job(jobs, setting) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LETHE_TORCH_THREADS"}
    if setting:
        env["LETHE_TORCH_THREADS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, str(jobs)], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    expected = int(setting) if setting else max(1, got["default"] // jobs)
    assert got["threads"] == expected
