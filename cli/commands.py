"""`lethe` commands that talk to a running API through the client: unlearn, jobs, models, evaluate, study.

The server is LETHE_URL (or --url) and the key LETHE_API_KEY (or --api-key). Bad arguments print one
line starting with "error:" and exit with status 2; an error answered by the API exits with status 1.
"""

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

from client import (
    DEFAULT_URL,
    Client,
    Evaluation,
    EvaluationRow,
    InvalidRequest,
    Job,
    LetheError,
    Model,
    NotFound,
    RateLimited,
    Unauthorized,
)

EXIT_API = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> NoReturn:
    """One clear line on stderr and the given status, never a traceback."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=code)


def _usage(message: str) -> NoReturn:
    _fail(message, EXIT_USAGE)


# Typer may vendor its own click: its usage errors are whatever typer.BadParameter derives from.
_UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _one_line(exc: Exception) -> NoReturn:
    """A usage error as one "error:" line; a group called without arguments still shows its help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    _usage(exc.format_message())  # type: ignore[attr-defined]


class _OneLineUsage:
    """Usage errors (missing argument, bad option value) as one "error:" line instead of a usage box."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except _UsageError as exc:
            _one_line(exc)


class _Command(_OneLineUsage, TyperCommand):
    pass


class _Group(_OneLineUsage, TyperGroup):
    """A command group whose unknown subcommands are one "error:" line too."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple[Any, ...]:
        try:
            return super().resolve_command(ctx, args)
        except _UsageError as exc:
            _one_line(exc)


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

jobs_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Jobs: list, show and cancel.")
models_app = typer.Typer(
    cls=_Group, no_args_is_help=True, help="Models: list, and show one with its lineage."
)


def register(app: typer.Typer) -> None:
    """Add the API commands to the main `lethe` app."""
    app.command("unlearn", cls=_Command)(unlearn_command)
    app.command("evaluate", cls=_Command)(evaluate_command)
    app.command("study", cls=_Command)(study_command)
    app.command("methods", cls=_Command)(methods_command)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(models_app, name="models")


# Arguments


ForgetClass = Annotated[
    int | None,
    typer.Option(
        "--class", help="forget every training sample of this class instead of --ids", show_default=False
    ),
]


def _forget_set(ids: str | None, ids_file: Path | None, forget_class: int | None) -> list[int] | None:
    """The ids to forget, or None when a whole class is named instead."""
    if forget_class is None:
        return _read_ids(ids, ids_file)
    if ids is not None or ids_file is not None:
        _usage("give --class or --ids/--ids-file, not both")
    return None


def _read_ids(ids: str | None, ids_file: Path | None) -> list[int]:
    """The forget set from exactly one of --ids and --ids-file."""
    if ids is not None and ids_file is not None:
        _usage("give --ids or --ids-file, not both")
    if ids is None and ids_file is None:
        _usage("give the samples to forget with --ids 1,2,3 or --ids-file FILE")
    flag = "--ids" if ids is not None else "--ids-file"
    if ids_file is not None:
        try:
            ids = ids_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            _usage(f"--ids-file: cannot read {ids_file} ({getattr(exc, 'strerror', None) or exc})")
    tokens = [t for t in re.split(r"[\s,]+", ids or "") if t]
    if not tokens:
        _usage(f"{flag}: no sample ids given")
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        _usage(f"{flag}: {bad!r} is not a sample id (an integer)")


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """--param KEY=VALUE pairs; values parse as JSON when they can (5 -> int, true -> bool), else stay text."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            _usage(f"--param {item!r}: expected KEY=VALUE, such as epochs=5")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        _usage(f"--delta must lie in [0, 1), got {delta:g}")


def _split_names(value: str, flag: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        _usage(f"{flag}: give at least one name, comma separated")
    return names


# The API and its errors


def _describe(exc: LetheError) -> str:
    """The one-line explanation of an API error."""
    if isinstance(exc, InvalidRequest):
        return f"invalid request: {exc.message}"
    if isinstance(exc, Unauthorized):
        return f"not authorised: {exc.message} (set LETHE_API_KEY or --api-key)"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return f"rate limited: {exc.message} (retry in {exc.retry_after:.0f}s)"
    return exc.message


@contextmanager
def _connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client for the command's body; any API error ends the command with one line and status 1."""
    try:
        with Client(url, api_key=api_key) as api:
            yield api
    except LetheError as exc:
        _fail(_describe(exc), EXIT_API)


# Output


def _print_json(value: Any) -> None:
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


def _fmt(value: Any) -> str:
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


def _pairs(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(_fmt(value)))  # Text: brackets in values are not rich markup
    return table


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _job_info(job: Job) -> str:
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


class _EtaColumn(ProgressColumn):
    """The server's ETA (eta_seconds) when it gives one, else rich's estimate from the progress so far."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        if eta is None:
            eta = task.time_remaining
        return Text(f"ETA {_duration(eta)}" if eta is not None else "ETA -:--", style="progress.remaining")


def _follow(api: Client, job_id: str, *, show: bool) -> Job:
    """Wait for the job (with a progress bar on stderr when `show`); a job that did not succeed exits 1."""
    columns = (
        SpinnerColumn(),
        TextColumn("job {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _EtaColumn(),
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
                    info=_job_info(job),
                )
    except KeyboardInterrupt:
        _fail(
            f"interrupted; job {job_id} keeps running (lethe jobs cancel {job_id} stops it)", EXIT_INTERRUPTED
        )
    if job.status != "succeeded":
        _fail(f"job {job_id} {job.status}: {job.error or 'no reason given'}", EXIT_API)
    return job


def _model_table(model: Model) -> Table:
    rows: list[tuple[str, Any]] = [
        ("id", model.id),
        ("name", model.name),
        ("dataset", model.dataset),
        ("status", model.status),
        ("made by", model.made_by),
        ("parent", model.parent_id),
        ("forgotten samples", model.n_forgotten),
        ("forgotten sha256", model.forgotten_sha256),
        ("arch", model.arch),
        ("recipe", model.recipe),
        ("seed", model.seed),
        ("job", model.job_id),
        ("created", model.created_at.isoformat(timespec="seconds")),
    ]
    rows += [(f"metrics.{k}", v) for k, v in model.metrics.items()]
    return _pairs(f"model {model.name or model.id}", rows)


def _lineage_table(api: Client, model: Model) -> Table:
    """The model and its ancestors up to the root, with how each was made."""
    table = Table(title="lineage (newest first)", title_justify="left")
    for header in ("id", "name", "made by", "forgotten", "status"):
        table.add_column(header, justify="right" if header == "forgotten" else "left", overflow="fold")
    for model_id in model.lineage:
        m = model if model_id == model.id else api.get_model(model_id)
        table.add_row(m.id, _fmt(m.name), m.made_by, str(m.n_forgotten), m.status)
    return table


def _stat(results: dict[str, Any], key: str) -> str:
    """A spread {"mean", "ci95", "n"} as "mean ± ci95"."""
    stat = results.get(key) or {}
    if stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.4f} ± {stat.get('ci95') or 0:.4f}"


def _evaluation_table(evaluation: Evaluation, url: str) -> Table:
    r = evaluation.results or {}
    measure = "mae" if "retain_mae" in r else "accuracy"
    neurips = r.get("neurips") or {}
    rows: list[tuple[str, Any]] = [
        ("id", evaluation.id),
        ("method", evaluation.method),
        ("params", evaluation.params),
        ("status", evaluation.status),
        (f"epsilon-hat (delta {evaluation.delta:g})", r.get("epsilon_hat")),
        ("95% over models (bootstrap)", r.get("epsilon_hat_ci95_models")),
        ("resolution", r.get("resolution_note")),
        ("ceiling at these group sizes", r.get("epsilon_ceiling")),
        ("samples at the ceiling", r.get("n_at_ceiling")),
        ("smooth estimate", r.get("epsilon_hat_smooth")),
        ("mean", r.get("mean")),
        ("per-sample 95% half-width", r.get("ci95")),
        ("samples", r.get("n_samples")),
        ("reference models", r.get("n_reference")),
        ("unlearned models", r.get("n_unlearned")),
        ("infinite samples", r.get("n_infinite")),
        ("NeurIPS score", neurips.get("score")),
        *((f"{part} {measure}", _stat(r, f"{part}_{measure}")) for part in ("retain", "forget", "test")),
        ("cost vs retrain", r.get("cost_vs_retrain")),
        ("reference set", evaluation.reference_set_id),
    ]
    if evaluation.results is not None:
        rows.append(("figures", f"{url}/evaluations/{evaluation.id}/plots/{{epsilon-delta,histograms}}.png"))
    return _pairs(f"evaluation of {evaluation.method}", rows)


def _rows_table(rows: list[EvaluationRow], title: str) -> Table:
    """Methods side by side, like the study's Table 1."""
    table = Table(title=title, title_justify="left")
    headers = (
        "method",
        "status",
        "epsilon-hat",
        "ci95",
        "infinite",
        "retain",
        "forget",
        "test",
        "cost/retrain",
    )
    for header in headers:
        table.add_column(header, justify="left" if header in ("method", "status") else "right")
    for row in rows:
        table.add_row(
            row.method,
            row.status,
            *(_fmt(v) for v in (row.epsilon_hat, row.ci95, row.n_infinite, row.retain, row.forget, row.test)),
            _fmt(row.cost_vs_retrain),
        )
    return table


# Commands


def unlearn_command(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="id or name of the model to unlearn from", show_default=False),
    ],
    method: Annotated[str, typer.Option("--method", "-m", help="unlearning method (see `lethe methods`)")],
    ids: Ids = None,
    ids_file: IdsFile = None,
    forget_class: ForgetClass = None,
    param: Params = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the method's randomness")] = 0,
    name: Annotated[
        str | None, typer.Option("--name", help="name of the new model", show_default=False)
    ] = None,
    requested_by: Annotated[
        str | None, typer.Option("--requested-by", help="who asked, for the audit record", show_default=False)
    ] = None,
    wait: Wait = False,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Make MODEL forget samples; the result is a new model, the parent is never modified."""
    forget = _forget_set(ids, ids_file, forget_class)
    params = _parse_params(param)
    with _connect(url, api_key) as api:
        created = api.unlearn(
            model,
            forget,
            method,
            forget_class=forget_class,
            params=params,
            seed=seed,
            name=name,
            requested_by=requested_by,
        )
        if not wait:
            if as_json:
                _print_json(created)
            else:
                typer.echo(
                    f"queued unlearning job {created.job_id} (forget request {created.forget_request_id})"
                )
                typer.echo(f"follow it with: lethe jobs show {created.job_id}")
            return
        job = _follow(api, created.job_id, show=not as_json)
        child = api.get_model((job.result or {})["model_id"])
        if as_json:
            _print_json({"job": job, "model": child})
        else:
            Console().print(_model_table(child))


def evaluate_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="id or name of the model to evaluate the method on", show_default=False
        ),
    ],
    method: Annotated[str, typer.Option("--method", "-m", help="unlearning method (see `lethe methods`)")],
    ids: Ids = None,
    ids_file: IdsFile = None,
    forget_class: ForgetClass = None,
    param: Params = None,
    n_models: NModels = 8,
    delta: Delta = 0.05,
    wait: Wait = False,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Measure how well METHOD forgets on MODEL: epsilon-hat of N unlearned against N retrained models."""
    forget = _forget_set(ids, ids_file, forget_class)
    params = _parse_params(param)
    _check_delta(delta)
    with _connect(url, api_key) as api:
        created = api.create_evaluation(
            model, forget, method, forget_class=forget_class, params=params, n_models=n_models, delta=delta
        )
        if not wait:
            if as_json:
                _print_json(created)
            else:
                typer.echo(f"queued evaluation {created.evaluation_id} (job {created.job_id})")
                typer.echo(f"follow it with: lethe jobs show {created.job_id}")
            return
        job = _follow(api, created.job_id, show=not as_json)
        evaluation = api.get_evaluation(created.evaluation_id)
        if as_json:
            _print_json({"job": job, "evaluation": evaluation})
        else:
            Console().print(_evaluation_table(evaluation, api.url))


def study_command(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="id or name of the model to study", show_default=False)
    ],
    methods: Annotated[
        str, typer.Option("--methods", help="unlearning methods, comma separated: none,finetune,retrain")
    ],
    ids: Ids = None,
    ids_file: IdsFile = None,
    fraction: Annotated[
        float | None,
        typer.Option(
            "--fraction",
            help="forget this share of the training split, drawn with --seed (instead of --ids)",
            show_default=False,
        ),
    ] = None,
    n_models: NModels = 8,
    delta: Delta = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="seed of the forget-set draw with --fraction")] = 0,
    wait: Wait = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export", help="write the finished study's zip here (implies --wait)", show_default=False
        ),
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Run the study's protocol on MODEL: one reference set and one evaluation per method."""
    if fraction is None:
        forget = _read_ids(ids, ids_file)
    elif ids is not None or ids_file is not None:
        _usage("give --ids, --ids-file or --fraction, only one of them")
    elif not 0 < fraction < 1:
        _usage(f"--fraction must lie between 0 and 1, got {fraction:g}")
    else:
        forget = None
    _check_delta(delta)
    names = _split_names(methods, "--methods")
    if export is not None and not export.parent.is_dir():
        _usage(f"--export: folder {export.parent} does not exist")
    with _connect(url, api_key) as api:
        created = api.create_study(
            model,
            names,
            forget_ids=forget,
            forget_fraction=fraction,
            n_models=n_models,
            delta=delta,
            seed=seed,
        )
        if not (wait or export):
            if as_json:
                _print_json(created)
            else:
                typer.echo(f"queued study {created.study_id} (job {created.job_id})")
                typer.echo(f"follow it with: lethe jobs show {created.job_id}")
            return
        job = _follow(api, created.job_id, show=not as_json)
        study = api.get_study(created.study_id)
        rows = api.list_evaluations(study_id=study.id).data
        if export is not None:
            export.write_bytes(api.export_study(study.id))
            typer.echo(f"study written to {export}", err=True)
        if as_json:
            _print_json({"job": job, "study": study, "evaluations": rows})
        else:
            Console().print(_rows_table(rows, f"study {study.id}: epsilon-hat and mean accuracies"))


def methods_command(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List the unlearning methods with their parameters and defaults."""
    with _connect(url, api_key) as api:
        methods = api.list_methods()
    if as_json:
        _print_json(methods)
        return
    table = Table(title="unlearning methods", title_justify="left")
    table.add_column("method", style="bold")
    table.add_column("description", overflow="fold")
    table.add_column("parameters (defaults)", overflow="fold")
    for m in methods:
        props = m.params_schema.get("properties", {})
        params = ", ".join(f"{k}={_fmt(p.get('default'))}" for k, p in props.items())
        table.add_row(m.name, Text(m.description), Text(params or "-"))
    Console().print(table)


@jobs_app.command("list", cls=_Command)
def jobs_list(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List jobs (needs a server with GET /jobs)."""
    with _connect(url, api_key) as api:
        try:
            jobs = api.list_jobs().data
        except LetheError as exc:
            if isinstance(exc, NotFound) or exc.status == 405:
                _fail(
                    f"{api.url} has no job list (GET /jobs answered {exc.status}); "
                    "look a job up with: lethe jobs show ID",
                    EXIT_API,
                )
            raise
    if as_json:
        _print_json(jobs)
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
            _fmt(job.model_id),
            job.created_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@jobs_app.command("show", cls=_Command)
def jobs_show(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="job id", show_default=False)],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a job's state, progress, result and, once it has them, metrics."""
    with _connect(url, api_key) as api:
        job = api.get_job(job_id)
        metrics = None
        if job.status == "succeeded":
            try:
                metrics = api.get_job_metrics(job_id)
            except NotFound:
                metrics = None
    if as_json:
        _print_json(job.model_dump(mode="json") | {"metrics": metrics})
        return
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("kind", job.kind),
        ("status", job.status),
        ("progress", f"{job.progress:.0%}  {_job_info(job)}"),
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
    Console().print(_pairs(f"job {job.id}", rows))


@jobs_app.command("cancel", cls=_Command)
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="job id", show_default=False)],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a job: a queued one ends at once, a running one at its next training step."""
    with _connect(url, api_key) as api:
        job = api.cancel(job_id)
    if as_json:
        _print_json(job)
    else:
        typer.echo(f"cancel requested for job {job.id}; it is {job.status}")


@models_app.command("list", cls=_Command)
def models_list(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List models, newest first."""
    with _connect(url, api_key) as api:
        models = api.list_models().data
    if as_json:
        _print_json(models)
        return
    table = Table(title="models", title_justify="left")
    for header in ("id", "name", "dataset", "status", "made by", "parent", "forgotten", "created"):
        table.add_column(header, justify="right" if header == "forgotten" else "left", overflow="fold")
    for m in models:
        table.add_row(
            m.id,
            _fmt(m.name),
            m.dataset,
            m.status,
            m.made_by,
            _fmt(m.parent_id),
            str(m.n_forgotten),
            m.created_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


@models_app.command("show", cls=_Command)
def models_show(
    model: Annotated[str, typer.Argument(metavar="ID", help="model id or name", show_default=False)],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a model's metadata, metrics and lineage (the models it was unlearned from)."""
    with _connect(url, api_key) as api:
        found = api.get_model(model)
        if as_json:
            _print_json(found)
            return
        console = Console()
        console.print(_model_table(found))
        console.print(_lineage_table(api, found))
