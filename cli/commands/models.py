"""`lethe models`: list models, show one with its lineage."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.commands.common import (
    ApiKey,
    AsJson,
    Command,
    Group,
    Url,
    connect,
    fmt,
    pairs,
    print_json,
)
from client import DEFAULT_URL, Client, Model

models_app = typer.Typer(cls=Group, no_args_is_help=True, help="Models: list, and show one with its lineage.")


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
    table = Table(title="lineage (newest first)", title_justify="left")
    for header in ("id", "name", "made by", "forgotten", "status"):
        table.add_column(header, justify="right" if header == "forgotten" else "left", overflow="fold")
    for model_id in model.lineage:
        m = model if model_id == model.id else api.get_model(model_id)
        table.add_row(m.id, fmt(m.name), m.made_by, str(m.n_forgotten), m.status)
    return table


@models_app.command("list", cls=Command)
def models_list(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List models, newest first."""
    with connect(url, api_key) as api:
        models = api.list_models().data
    if as_json:
        print_json(models)
        return
    table = Table(title="models", title_justify="left")
    for header in ("id", "name", "dataset", "status", "made by", "parent", "forgotten", "created"):
        table.add_column(header, justify="right" if header == "forgotten" else "left", overflow="fold")
    for m in models:
        table.add_row(
            m.id,
            fmt(m.name),
            m.dataset,
            m.status,
            m.made_by,
            fmt(m.parent_id),
            str(m.n_forgotten),
            m.created_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


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
        console = Console()
        console.print(model_table(found))
        console.print(lineage_table(api, found))
