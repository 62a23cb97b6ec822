"""`lethe models`: list models, show one with its lineage, download its weights, upload a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.commands.api import connect
from cli.commands.common import DEFAULT_URL, ApiKey, AsJson, Command, Group, Url, usage
from cli.commands.output import console, fmt, pairs, print_json, table

if TYPE_CHECKING:
    from rich.table import Table

    from client import Client, Model

models_app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    help="Models: list, show one with its lineage, download its weights, upload a checkpoint.",
)


def model_table(model: Model) -> Table:
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
    return pairs(f"model {model.name or model.id}", rows)


def lineage_table(api: Client, model: Model) -> Table:
    """The model and its ancestors up to the root, with how each was made."""
    out = table(
        "lineage (newest first)", ("id", "name", "made by", "forgotten", "status"), right=("forgotten",)
    )
    for model_id in model.lineage:
        m = model if model_id == model.id else api.get_model(model_id)
        out.add_row(m.id, fmt(m.name), m.made_by, str(m.n_forgotten), m.status)
    return out


@models_app.command("list", cls=Command)
def models_list(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List models, newest first."""
    with connect(url, api_key) as api:
        models = api.list_models().data
    if as_json:
        print_json(models)
        return
    headers = ("id", "name", "dataset", "status", "made by", "parent", "forgotten", "created")
    out = table("models", headers, right=("forgotten",))
    for m in models:
        out.add_row(
            m.id,
            fmt(m.name),
            m.dataset,
            m.status,
            m.made_by,
            fmt(m.parent_id),
            str(m.n_forgotten),
            m.created_at.isoformat(timespec="seconds"),
        )
    console().print(out)


@models_app.command("show", cls=Command)
def models_show(
    model: Annotated[str, typer.Argument(metavar="ID", help="model id or name", show_default=False)],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a model's metadata, metrics and lineage (the models it was unlearned from)."""
    with connect(url, api_key) as api:
        found = api.get_model(model)
        if as_json:
            print_json(found)
            return
        out = console()
        out.print(model_table(found))
        out.print(lineage_table(api, found))


@models_app.command("download", cls=Command)
def models_download(
    model: Annotated[str, typer.Argument(metavar="ID", help="model id or name", show_default=False)],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="file to write, or a folder to write <name>.safetensors into"),
    ] = Path("."),
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Download a ready model's weights (safetensors), checked against the sha256 the server sends."""
    if not output.is_dir() and not output.parent.is_dir():
        usage(f"--output: folder {output.parent} does not exist")
    with connect(url, api_key) as api:
        path = api.download_model(model, output)
    from client.client import file_sha256

    digest = file_sha256(path)
    if as_json:
        print_json({"model": model, "path": str(path), "sha256": digest, "bytes": path.stat().st_size})
    else:
        typer.echo(f"{path}  sha256 {digest}")


@models_app.command("upload", cls=Command)
def models_upload(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help=".safetensors, or a PyTorch state dict (.pt, .ckpt)", show_default=False
        ),
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", help="registered data set it was trained on", show_default=False)
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="name of the new model", show_default=False)
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option("--arch", help="architecture as JSON, e.g. '{\"width\": 64}'", show_default=False),
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Register a trained checkpoint as a ready model (tensors only: pickled code is refused)."""
    if not file.is_file():
        usage(f"FILE: {file} is not a file")
    try:
        spec = None if arch is None else json.loads(arch)
    except ValueError:
        usage(f"--arch: {arch!r} is not JSON, such as '{{\"width\": 64}}'")
    if spec is not None and not isinstance(spec, dict):
        usage("--arch: give a JSON object, such as '{\"width\": 64}'")
    with connect(url, api_key) as api:
        created = api.upload_model(file, dataset, name=name, arch=spec)
        uploaded = api.get_model(created.model_id)
    if as_json:
        print_json(uploaded)
    else:
        typer.echo(
            f"uploaded {file.name} as model {uploaded.name or uploaded.id} ({uploaded.id}), {uploaded.status}"
        )
