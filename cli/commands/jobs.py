"""`lethe jobs`: list, show, follow and cancel jobs; every ID may be the first 8 or more characters of one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.commands.api import connect, resolve_job
from cli.commands.common import DEFAULT_URL, EXIT_API, ApiKey, AsJson, Command, Group, JobRef, Url, fail
from cli.commands.output import console, fmt, pairs, print_json, table
from cli.commands.progress import follow, job_info, short_id

if TYPE_CHECKING:
    from rich.table import Table

    from client import Client, Job

jobs_app = typer.Typer(cls=Group, no_args_is_help=True, help="Jobs: list, show, wait for and cancel.")


@jobs_app.command("list", cls=Command)
def jobs_list(
    show_all: Annotated[
        bool, typer.Option("--all", help="also list the runs of evaluations, studies and reference sets")
    ] = False,
    status: Annotated[
        str | None,
        typer.Option("--status", help="queued, running, succeeded, failed or cancelled", show_default=False),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="train, unlearn, evaluate, study, reference, logits ...", show_default=False
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="only this model's jobs (id or name)", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="jobs to list at most")] = 50,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List jobs, newest first; the runs that evaluations, studies and reference sets start are left out
    unless --all is given (needs a server with GET /jobs)."""
    with connect(url, api_key) as api:
        from client import LetheError, NotFound

        try:
            page = api.list_jobs(
                status=status, kind=kind, model_id=model, top_level=not show_all, limit=limit
            )
        except LetheError as exc:
            if isinstance(exc, NotFound) and model is not None:
                raise
            if isinstance(exc, NotFound) or exc.status == 405:
                fail(
                    f"{api.url} has no job list (GET /jobs answered {exc.status}); "
                    "look a job up with: lethe jobs show ID",
                    EXIT_API,
                )
            raise
    if as_json:
        print_json(page.data)
        return
    shown = f"{len(page.data)} of {page.count}" if page.count > len(page.data) else str(page.count)
    title = f"jobs ({shown}{'' if show_all else '; --all also lists the runs of other jobs'})"
    headers = ("id", "kind", "status", "progress", "model", *(("parent",) if show_all else ()), "created")
    out = table(title, headers, right=("progress",))
    for job in page.data:
        parent = (short_id(job.parent_id) if job.parent_id else "-",) if show_all else ()
        out.add_row(
            job.id,
            job.kind,
            job.status,
            f"{job.progress:.0%}",
            fmt(job.model_id),
            *parent,
            job.created_at.isoformat(timespec="seconds"),
        )
    console().print(out)


def job_table(api: Client, job: Job) -> tuple[Table, dict[str, Any] | None]:
    """A job's fields, progress and, once it has succeeded, metrics; and the metrics themselves."""
    from client import NotFound

    metrics = None
    if job.status == "succeeded":
        try:
            metrics = api.get_job_metrics(job.id).model_dump(mode="json", exclude_unset=True)
        except NotFound:
            metrics = None
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
        ("parent job", job.parent_id),
        ("result", job.result),
        ("created", job.created_at.isoformat(timespec="seconds")),
        ("started", job.started_at.isoformat(timespec="seconds") if job.started_at else None),
        ("finished", job.finished_at.isoformat(timespec="seconds") if job.finished_at else None),
        *((f"metrics.{k}", v) for k, v in (metrics or {}).items()),
    ]
    return pairs(f"job {job.id}", rows), metrics


def show(api: Client, job: Job, as_json: bool) -> None:
    out, metrics = job_table(api, job)
    if as_json:
        print_json(job.model_dump(mode="json") | {"metrics": metrics})
    else:
        console().print(out)


@jobs_app.command("show", cls=Command)
def jobs_show(
    job_id: JobRef, as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None
) -> None:
    """Show a job's state, progress, result and, once it has them, metrics."""
    with connect(url, api_key) as api:
        show(api, api.get_job(resolve_job(api, job_id)), as_json)


@jobs_app.command("wait", cls=Command)
def jobs_wait(
    job_id: JobRef, as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None
) -> None:
    """Follow a job until it finishes (as --wait does), then show it; exits 1 unless it succeeded."""
    with connect(url, api_key) as api:
        show(api, follow(api, resolve_job(api, job_id), show=not as_json), as_json)


@jobs_app.command("cancel", cls=Command)
def jobs_cancel(
    job_id: JobRef, as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None
) -> None:
    """Cancel a job: a queued one ends at once, a running one at its next training step."""
    with connect(url, api_key) as api:
        job = api.cancel(resolve_job(api, job_id))
    if as_json:
        print_json(job)
    else:
        typer.echo(f"cancel requested for job {job.id}; it is {job.status}")
