"""`lethe jobs`: list, show and cancel jobs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.commands.common import (
    EXIT_API,
    ApiKey,
    AsJson,
    Command,
    Group,
    Url,
    connect,
    fail,
    fmt,
    job_info,
    pairs,
    print_json,
)
from client import DEFAULT_URL, LetheError, NotFound

jobs_app = typer.Typer(cls=Group, no_args_is_help=True, help="Jobs: list, show and cancel.")


@jobs_app.command("list", cls=Command)
def jobs_list(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List jobs (needs a server with GET /jobs)."""
    with connect(url, api_key) as api:
        try:
            jobs = api.list_jobs().data
        except LetheError as exc:
            if isinstance(exc, NotFound) or exc.status == 405:
                fail(
                    f"{api.url} has no job list (GET /jobs answered {exc.status}); "
                    "look a job up with: lethe jobs show ID",
                    EXIT_API,
                )
            raise
    if as_json:
        print_json(jobs)
        return
    table = Table(title="jobs", title_justify="left")
    for header in ("id", "kind", "status", "progress", "model", "created"):
        table.add_column(header, justify="right" if header == "progress" else "left", overflow="fold")
    for job in jobs:
        table.add_row(
            job.id,
            job.kind,
            job.status,
            f"{job.progress:.0%}",
            fmt(job.model_id),
            job.created_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@jobs_app.command("show", cls=Command)
def jobs_show(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="job id", show_default=False)],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a job's state, progress, result and, once it has them, metrics."""
    with connect(url, api_key) as api:
        job = api.get_job(job_id)
        metrics = None
        if job.status == "succeeded":
            try:
                metrics = api.get_job_metrics(job_id).model_dump(mode="json", exclude_unset=True)
            except NotFound:
                metrics = None
    if as_json:
        print_json(job.model_dump(mode="json") | {"metrics": metrics})
        return
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("kind", job.kind),
        ("status", job.status),
        ("progress", f"{job.progress:.0%}  {job_info(job)}"),
        *((f"progress.{k}", v) for k, v in job.progress_info.items()),
        ("error", job.error),
        ("attempts", job.attempts),
        ("model", job.model_id),
        ("forget request", job.forget_request_id),
        ("result", job.result),
        ("created", job.created_at.isoformat(timespec="seconds")),
        ("started", job.started_at.isoformat(timespec="seconds") if job.started_at else None),
        ("finished", job.finished_at.isoformat(timespec="seconds") if job.finished_at else None),
        *((f"metrics.{k}", v) for k, v in (metrics or {}).items()),
    ]
    Console().print(pairs(f"job {job.id}", rows))


@jobs_app.command("cancel", cls=Command)
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="job id", show_default=False)],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a job: a queued one ends at once, a running one at its next training step."""
    with connect(url, api_key) as api:
        job = api.cancel(job_id)
    if as_json:
        print_json(job)
    else:
        typer.echo(f"cancel requested for job {job.id}; it is {job.status}")
