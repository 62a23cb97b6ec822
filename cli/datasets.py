"""`lethe datasets`: register a data set from its files (loaded and measured here), list the registered ones."""

from __future__ import annotations

import json
from pathlib import Path

import typer

datasets_app = typer.Typer(help="Register and list data sets.", no_args_is_help=True)


def _parse_options(options: list[str]) -> dict[str, object]:
    parsed: dict[str, object] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--option")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


@datasets_app.command("add")
def add(
    name: str = typer.Argument(help="name to register it under (used in POST /models)"),
    kind: str = typer.Option(..., help="loader: cifar10, fashion_mnist, agedb, image_folder, digits"),
    root: Path | None = typer.Option(None, help="folder with the data set's files"),
    option: list[str] = typer.Option([], help="loader option key=value, e.g. task=regression (repeatable)"),
) -> None:
    """Load the data set once to check its files and record its sizes, then register it."""
    from core.db import session_scope
    from core.errors import LetheError
    from core.services import register_dataset
    from ml.data import DatasetError, load_dataset

    options = _parse_options(option)
    try:
        data = load_dataset(kind, root, **options)
        summary = data.summary()
    except (DatasetError, TypeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        with session_scope() as session:
            ds = register_dataset(
                session,
                tenant_id="local",
                name=name,
                kind=kind,
                root=str(root.resolve()) if root else None,
                options=options,
                summary=summary,
                train_labels=data.train_y if data.task == "classification" else None,
            )
            ds_id = ds.id
    except LetheError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"registered {name} ({kind}): {summary['n_train']} train, {summary['n_test']} test, id {ds_id}"
    )


@datasets_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The registered data sets and their sizes."""
    from core.db import session_scope
    from core.services import list_datasets

    with session_scope() as session:
        rows = [
            {
                "name": d.name,
                "kind": d.kind,
                "n_train": d.n_train,
                "n_test": d.n_test,
                "task": d.task,
                "root": d.root,
            }
            for d in list_datasets(session, "local")
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(
            f"{r['name']:<16} {r['kind']:<14} {r['n_train']:>7} train {r['n_test']:>7} test  {r['task']}"
        )
