"""The progress bar `--wait` draws on a terminal (rich.progress is imported only then)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.text import Text

from cli.commands.output import duration
from cli.commands.progress import job_info

if TYPE_CHECKING:
    from rich.console import Console

    from client import Job


class EtaColumn(ProgressColumn):
    """The server's ETA (eta_seconds) when it gives one, else rich's estimate from the progress so far."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        if eta is None:
            eta = task.time_remaining
        return Text(f"ETA {duration(eta)}" if eta is not None else "ETA -:--", style="progress.remaining")


@contextmanager
def progress_bar(console: Console, label: str) -> Iterator[Callable[[Job], None]]:
    """A live bar for one job on `console`; yields the function that moves it to a job's new state."""
    columns = (
        SpinnerColumn(),
        TextColumn("job {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        EtaColumn(),
        TextColumn("{task.fields[info]}", markup=False),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=1.0, eta=None, info="queued")

        def update(job: Job) -> None:
            bar.update(
                task, completed=job.progress, eta=job.progress_info.get("eta_seconds"), info=job_info(job)
            )

        yield update
