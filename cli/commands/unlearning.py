"""`lethe unlearn`, `evaluate`, `study` and `methods`: forget samples and measure how well it worked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.commands.api import connect
from cli.commands.arguments import check_delta, forget_set, parse_params, read_ids, split_names
from cli.commands.common import (
    DEFAULT_URL,
    ApiKey,
    AsJson,
    Delta,
    ForgetClass,
    Ids,
    IdsFile,
    NModels,
    Params,
    Url,
    Wait,
    usage,
)
from cli.commands.models import model_table
from cli.commands.output import console, fmt, pairs, print_json
from cli.commands.progress import follow

if TYPE_CHECKING:
    from rich.table import Table

    from client import Evaluation, EvaluationRow


def stat(results: dict[str, Any], key: str) -> str:
    """A spread {"mean", "ci95", "n"} as "mean ± ci95"."""
    stat = results.get(key) or {}
    if stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.4f} ± {stat.get('ci95') or 0:.4f}"


def evaluation_table(evaluation: Evaluation, url: str) -> Table:
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
        *((f"{part} {measure}", stat(r, f"{part}_{measure}")) for part in ("retain", "forget", "test")),
        ("cost vs retrain", r.get("cost_vs_retrain")),
        ("reference set", evaluation.reference_set_id),
    ]
    if evaluation.results is not None:
        rows.append(("figures", f"{url}/evaluations/{evaluation.id}/plots/{{epsilon-delta,histograms}}.png"))
    return pairs(f"evaluation of {evaluation.method}", rows)


def rows_table(rows: list[EvaluationRow], title: str) -> Table:
    """Methods side by side, like the study's Table 1."""
    from rich.table import Table

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
            *(fmt(v) for v in (row.epsilon_hat, row.ci95, row.n_infinite, row.retain, row.forget, row.test)),
            fmt(row.cost_vs_retrain),
        )
    return table


# Commands


def unlearn_command(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="id or name of the model to unlearn from", show_default=False),
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="unlearning method, or auto: Lethe chooses one for this model (see `lethe methods`)",
        ),
    ],
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
    forget = forget_set(ids, ids_file, forget_class)
    params = parse_params(param)
    with connect(url, api_key) as api:
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
                print_json(created)
            else:
                typer.echo(
                    f"queued unlearning job {created.job_id} (forget request {created.forget_request_id})"
                )
                typer.echo(f"follow it with: lethe jobs show {created.job_id}")
            return
        job = follow(api, created.job_id, show=not as_json)
        child = api.get_model((job.result or {})["model_id"])
        if as_json:
            print_json({"job": job, "model": child})
        else:
            console().print(model_table(child))


def evaluate_command(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="id or name of the model to evaluate the method on", show_default=False
        ),
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="unlearning method (see `lethe methods`); not auto: an evaluation measures one fixed method",
        ),
    ],
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
    forget = forget_set(ids, ids_file, forget_class)
    params = parse_params(param)
    check_delta(delta)
    with connect(url, api_key) as api:
        created = api.create_evaluation(
            model, forget, method, forget_class=forget_class, params=params, n_models=n_models, delta=delta
        )
        if not wait:
            if as_json:
                print_json(created)
            else:
                typer.echo(f"queued evaluation {created.evaluation_id} (job {created.job_id})")
                typer.echo(f"follow it with: lethe jobs show {created.job_id}")
            return
        job = follow(api, created.job_id, show=not as_json)
        evaluation = api.get_evaluation(created.evaluation_id)
        if as_json:
            print_json({"job": job, "evaluation": evaluation})
        else:
            console().print(evaluation_table(evaluation, api.url))


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
        forget = read_ids(ids, ids_file)
    elif ids is not None or ids_file is not None:
        usage("give --ids, --ids-file or --fraction, only one of them")
    elif not 0 < fraction < 1:
        usage(f"--fraction must lie between 0 and 1, got {fraction:g}")
    else:
        forget = None
    check_delta(delta)
    names = split_names(methods, "--methods")
    if export is not None and not export.parent.is_dir():
        usage(f"--export: folder {export.parent} does not exist")
    with connect(url, api_key) as api:
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
                print_json(created)
            else:
                typer.echo(f"queued study {created.study_id} (job {created.job_id})")
                typer.echo(f"follow it with: lethe jobs show {created.job_id}")
            return
        job = follow(api, created.job_id, show=not as_json)
        study = api.get_study(created.study_id)
        rows = api.list_evaluations(study_id=study.id).data
        if export is not None:
            export.write_bytes(api.export_study(study.id))
            typer.echo(f"study written to {export}", err=True)
        if as_json:
            print_json({"job": job, "study": study, "evaluations": rows})
        else:
            console().print(rows_table(rows, f"study {study.id}: epsilon-hat and mean accuracies"))


def methods_command(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List the unlearning methods with their parameters and defaults, and auto (unlearn only)."""
    with connect(url, api_key) as api:
        methods = api.list_methods()
    if as_json:
        print_json(methods)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title="unlearning methods", title_justify="left")
    table.add_column("method", style="bold")
    table.add_column("description", overflow="fold")
    table.add_column("parameters (defaults)", overflow="fold")
    for m in methods:
        props = m.params_schema.get("properties", {})
        params = ", ".join(f"{k}={fmt(p.get('default'))}" for k, p in props.items())
        table.add_row(m.name, Text(m.description), Text(params or "-"))
    console().print(table)
