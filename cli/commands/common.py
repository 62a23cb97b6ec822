"""What every `lethe` command that talks to the API shares: options, argument parsing, errors, output."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from client import Client, InvalidRequest, Job, LetheError, RateLimited, Unauthorized

EXIT_API = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int) -> NoReturn:
    """One clear line on stderr and the given status, never a traceback."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=code)


def usage(message: str) -> NoReturn:
    fail(message, EXIT_USAGE)


# Typer may vendor its own click: its usage errors are whatever typer.BadParameter derives from.
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def one_line(exc: Exception) -> NoReturn:
    """A usage error as one "error:" line; a group called without arguments still shows its help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    usage(exc.format_message())  # type: ignore[attr-defined]


class OneLineUsage:
    """Usage errors (missing argument, bad option value) as one "error:" line instead of a usage box."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except _UsageError as exc:
            one_line(exc)


class Command(OneLineUsage, TyperCommand):
    pass


class Group(OneLineUsage, TyperGroup):
    """A command group whose unknown subcommands are one "error:" line too."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple[Any, ...]:
        try:
            return super().resolve_command(ctx, args)
        except _UsageError as exc:
            one_line(exc)


Url = Annotated[str, typer.Option("--url", envvar="LETHE_URL", help="address of the Lethe API")]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="LETHE_API_KEY", help="API key, sent as the X-API-Key header", show_default=False
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
Ids = Annotated[
    str | None,
    typer.Option("--ids", help="sample ids to forget, comma separated: 3,17,42", show_default=False),
]
IdsFile = Annotated[
    Path | None,
    typer.Option(
        "--ids-file", help="file of sample ids separated by commas, spaces or newlines", show_default=False
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="a method parameter as KEY=VALUE, repeatable; VALUE is read as JSON when it parses (5, 0.1, true)",
        show_default=False,
    ),
]
Wait = Annotated[bool, typer.Option("--wait", help="follow the job with a progress bar until it finishes")]
NModels = Annotated[
    int, typer.Option("--n-models", min=1, max=512, help="seeds of the method, and reference models needed")
]
Delta = Annotated[float, typer.Option("--delta", help="delta of (epsilon, delta), in [0, 1)")]


ForgetClass = Annotated[
    int | None,
    typer.Option(
        "--class", help="forget every training sample of this class instead of --ids", show_default=False
    ),
]


def forget_set(ids: str | None, ids_file: Path | None, forget_class: int | None) -> list[int] | None:
    """The ids to forget, or None when a whole class is named instead."""
    if forget_class is None:
        return read_ids(ids, ids_file)
    if ids is not None or ids_file is not None:
        usage("give --class or --ids/--ids-file, not both")
    return None


def read_ids(ids: str | None, ids_file: Path | None) -> list[int]:
    """The forget set from exactly one of --ids and --ids-file."""
    if ids is not None and ids_file is not None:
        usage("give --ids or --ids-file, not both")
    if ids is None and ids_file is None:
        usage("give the samples to forget with --ids 1,2,3 or --ids-file FILE")
    flag = "--ids" if ids is not None else "--ids-file"
    if ids_file is not None:
        try:
            ids = ids_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            usage(f"--ids-file: cannot read {ids_file} ({getattr(exc, 'strerror', None) or exc})")
    tokens = [t for t in re.split(r"[\s,]+", ids or "") if t]
    if not tokens:
        usage(f"{flag}: no sample ids given")
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        usage(f"{flag}: {bad!r} is not a sample id (an integer)")


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """--param KEY=VALUE pairs; values parse as JSON when they can (5 -> int, true -> bool), else stay text."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            usage(f"--param {item!r}: expected KEY=VALUE, such as epochs=5")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        usage(f"--delta must lie in [0, 1), got {delta:g}")


def split_names(value: str, flag: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        usage(f"{flag}: give at least one name, comma separated")
    return names


# The API and its errors


def describe(exc: LetheError) -> str:
    """The one-line explanation of an API error."""
    if isinstance(exc, InvalidRequest):
        return f"invalid request: {exc.message}"
    if isinstance(exc, Unauthorized):
        return f"not authorised: {exc.message} (set LETHE_API_KEY or --api-key)"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return f"rate limited: {exc.message} (retry in {exc.retry_after:.0f}s)"
    return exc.message


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client for the command's body; any API error ends the command with one line and status 1."""
    try:
        with Client(url, api_key=api_key) as api:
            yield api
    except LetheError as exc:
        fail(describe(exc), EXIT_API)


# Output


def print_json(value: Any) -> None:
    """Pydantic objects, lists and dicts of them, as indented JSON on stdout."""

    def plain(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v.model_dump(mode="json")
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    typer.echo(json.dumps(plain(value), indent=2))


def fmt(value: Any) -> str:
    """A cell: numbers to 4 significant decimals, None as "-", dicts and lists as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def pairs(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(fmt(value)))  # Text: brackets in values are not rich markup
    return table


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


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


class EtaColumn(ProgressColumn):
    """The server's ETA (eta_seconds) when it gives one, else rich's estimate from the progress so far."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        if eta is None:
            eta = task.time_remaining
        return Text(f"ETA {duration(eta)}" if eta is not None else "ETA -:--", style="progress.remaining")


def follow(api: Client, job_id: str, *, show: bool) -> Job:
    """Wait for the job (with a progress bar on stderr when `show`); a job that did not succeed exits 1."""
    columns = (
        SpinnerColumn(),
        TextColumn("job {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        EtaColumn(),
        TextColumn("{task.fields[info]}", markup=False),
    )
    try:
        with Progress(*columns, console=Console(stderr=True), disable=not show) as bar:
            task = bar.add_task(job_id[:8], total=1.0, eta=None, info="queued")
            for job in api.wait(job_id):
                bar.update(
                    task,
                    completed=job.progress,
                    eta=job.progress_info.get("eta_seconds"),
                    info=job_info(job),
                )
    except KeyboardInterrupt:
        fail(
            f"interrupted; job {job_id} keeps running (lethe jobs cancel {job_id} stops it)", EXIT_INTERRUPTED
        )
    if job.status != "succeeded":
        fail(f"job {job_id} {job.status}: {job.error or 'no reason given'}", EXIT_API)
    return job
