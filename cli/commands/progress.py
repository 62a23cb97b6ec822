"""Following a job with `--wait`: a progress bar on a terminal, plain progress lines anywhere else.

Progress goes to stderr, so stdout keeps only the result (a table, or JSON with --json). A CI log or a pipe
cannot show a bar, which rich would draw only once the job has ended: there each change of status or stage
is one line at once, and progress a line per 5 points at most once a second (or per minute while it creeps).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cli.commands.api import MIN_PREFIX
from cli.commands.common import EXIT_API, EXIT_INTERRUPTED, fail
from cli.commands.output import duration

if TYPE_CHECKING:
    from client import Client, Job

Report = Callable[["Job"], None]


def short_id(job_id: str) -> str:
    """The id the bar and the lines show: its first characters, which every command taking a job id accepts."""
    return job_id[:MIN_PREFIX]


def job_info(job: Job) -> str:
    """What the job is doing now: its stage, epoch, loss, or finished runs of a fan-out job."""
    info = job.progress_info
    parts = [job.status if job.status != "running" else str(info.get("stage", "running"))]
    if "epoch" in info:
        parts.append(f"epoch {info['epoch']}/{info.get('epochs', '?')}")
    if isinstance(info.get("loss"), int | float):
        parts.append(f"loss {info['loss']:.4f}")
    if "total" in info:
        parts.append(f"runs {info.get('finished', 0)}/{info['total']}")
    return "  ".join(parts)


class ProgressLines:
    """Plain lines for output that is not a terminal, each complete as it is written.

    A line is written for the first state seen, the final one, and every change of status or stage; progress
    alone writes one once it has moved `step` since the last line, or once `quiet` seconds have passed with any
    change, and never within `interval` seconds of the last line.
    """

    def __init__(
        self,
        job_id: str,
        write: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
        step: float = 0.05,
        quiet: float = 60.0,
    ) -> None:
        self.label = short_id(job_id)
        self.write = write
        self.clock = clock
        self.interval, self.step, self.quiet = interval, step, quiet
        self.last: tuple[str, str, float, float] | None = None  # status, stage, progress, time of the line

    def __call__(self, job: Job) -> None:
        now = self.clock()
        stage = str(job.progress_info.get("stage", ""))
        if self.last is not None and not job.finished and (job.status, stage) == self.last[:2]:
            since = now - self.last[3]
            moved = abs(job.progress - self.last[2])
            if since < self.interval or (moved < self.step and since < self.quiet):
                return
        self.last = (job.status, stage, job.progress, now)
        self.write(self.line(job))

    def line(self, job: Job) -> str:
        eta = job.progress_info.get("eta_seconds")
        tail = f"  ETA {duration(eta)}" if isinstance(eta, int | float) and not job.finished else ""
        return f"job {self.label}  {job.progress:4.0%}  {job_info(job)}{tail}"


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def reporter(job_id: str, show: bool) -> Iterator[Report]:
    """Where a followed job's states go: nowhere, a bar on an interactive stderr, or lines."""
    if not show:
        yield lambda job: None
        return
    from rich.console import Console

    err = Console(stderr=True)
    if not err.is_interactive:
        yield ProgressLines(job_id, _stderr_line)
        return
    from cli.commands.bar import progress_bar

    with progress_bar(err, short_id(job_id)) as update:
        yield update


def follow(api: Client, job_id: str, *, show: bool) -> Job:
    """Wait for the job, reporting its progress on stderr when `show`; a job that did not succeed exits 1."""
    job: Any = None
    try:
        with reporter(job_id, show) as report:
            for job in api.wait(job_id):
                report(job)
    except KeyboardInterrupt:
        fail(
            f"interrupted; job {job_id} keeps running (lethe jobs cancel {short_id(job_id)} stops it)",
            EXIT_INTERRUPTED,
        )
    if job.status != "succeeded":
        fail(f"job {job_id} {job.status}: {job.error or 'no reason given'}", EXIT_API)
    return job
