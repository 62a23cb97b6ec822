"""`--wait` progress off a terminal (ProgressLines), the choice between lines and a bar, and the constants the
command line repeats so that it starts without importing the client or ml/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cli.commands.progress import ProgressLines, reporter
from client.models import Job


def job(status: str = "running", progress: float = 0.0, **info: Any) -> Job:
    now = datetime.now(UTC)
    return Job(
        id="9f8e7d6c-0000-4000-8000-000000000000",
        kind="unlearn",
        status=status,
        progress=progress,
        progress_info=info,
        error=None,
        attempts=1,
        model_id=None,
        forget_request_id=None,
        result=None,
        created_at=now,
        started_at=None,
        finished_at=None,
        updated_at=now,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_each_stage_and_every_5_points_at_most_once_a_second():
    clock, out = Clock(), []
    lines = ProgressLines(job().id, out.append, clock=clock)
    steps = [
        (0.0, job("queued")),  # first: written
        (0.1, job(progress=0.0, stage="train", epoch=0, epochs=5)),  # status and stage change: at once
        (0.3, job(progress=0.20, stage="train", epoch=1, epochs=5)),  # 20 points, but within a second
        (1.2, job(progress=0.21, stage="train", epoch=1, epochs=5)),  # a second on, 21 points: written
        (2.5, job(progress=0.24, stage="train", epoch=1, epochs=5)),  # 3 points: not yet
        (3.0, job(progress=0.26, stage="train", epoch=1, epochs=5)),  # 5 points since the last line
        (3.1, job(progress=0.5, stage="evaluate")),  # a new stage, within a second: at once
        (40.0, job(progress=0.52, stage="evaluate", eta_seconds=3700)),  # creeping
        (70.5, job(progress=0.53, stage="evaluate", eta_seconds=3650)),  # a minute of it: written
        (70.6, job("succeeded", 1.0)),  # the end: at once
    ]
    for at, state in steps:
        clock.now = at
        lines(state)
    assert out == [
        "job 9f8e7d6c    0%  queued",
        "job 9f8e7d6c    0%  train  epoch 0/5",
        "job 9f8e7d6c   21%  train  epoch 1/5",
        "job 9f8e7d6c   26%  train  epoch 1/5",
        "job 9f8e7d6c   50%  evaluate",
        "job 9f8e7d6c   53%  evaluate  ETA 1:00:50",
        "job 9f8e7d6c  100%  succeeded",
    ]


def test_a_failed_job_gets_its_line_however_soon_it_fails():
    clock, out = Clock(), []
    lines = ProgressLines(job().id, out.append, clock=clock)
    lines(job(progress=0.5, stage="train"))
    clock.now = 0.01
    lines(job("failed", 0.5, stage="train"))
    assert out[-1] == "job 9f8e7d6c   50%  failed"


@pytest.mark.parametrize(("interactive", "bar"), [("1", True), ("0", False)])
def test_a_bar_on_an_interactive_stderr_and_lines_elsewhere(monkeypatch, interactive, bar):
    """rich decides what is interactive (a terminal, or TTY_INTERACTIVE=1); the test's stderr is a pipe."""
    monkeypatch.setenv("TTY_INTERACTIVE", interactive)
    with reporter(job().id, show=True) as report:
        assert isinstance(report, ProgressLines) is not bar
        report(job(progress=0.5, stage="train"))
    with reporter(job().id, show=False) as report:
        assert not isinstance(report, ProgressLines)


def test_the_constants_repeated_for_a_light_start_match_their_sources():
    from cli.commands.common import DEFAULT_URL
    from cli.epsilon import DEFAULT_DELTA
    from client import DEFAULT_URL as CLIENT_URL
    from ml.metrics.epsilon import DEFAULT_DELTA as ML_DELTA

    assert DEFAULT_URL == CLIENT_URL
    assert DEFAULT_DELTA == ML_DELTA
