"""`lethe logits`: a model's outputs on chosen samples, computed by a worker and saved as an .npz."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.commands.api import connect
from cli.commands.arguments import read_ids
from cli.commands.common import DEFAULT_URL, ApiKey, AsJson, IdsFile, Url, usage
from cli.commands.output import print_json
from cli.commands.progress import follow

ARTIFACT = "logits.npz"


def logits_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="model id or name", show_default=False)],
    split: Annotated[
        str | None,
        typer.Option("--split", help="train or test: every sample of it, or the split --ids index"),
    ] = None,
    ids: Annotated[
        str | None, typer.Option("--ids", help="sample ids, comma separated: 3,17,42", show_default=False)
    ] = None,
    ids_file: IdsFile = None,
    forget_request: Annotated[
        str | None,
        typer.Option("--forget-request", help="the ids a forget request named", show_default=False),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="file to write, or a folder to write logits.npz into")
    ] = Path(ARTIFACT),
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Compute a model's logits on a split, on chosen ids, or on a forget request's ids, and save the .npz
    (`logits` float32, one row per sample; `ids`; `labels`)."""
    if split not in (None, "train", "test"):
        usage(f"--split: train or test, not {split!r}")
    chosen = read_ids(ids, ids_file) if ids is not None or ids_file is not None else None
    if forget_request is not None and (chosen is not None or split is not None):
        usage("give --forget-request alone: its ids index the training split")
    if forget_request is None and chosen is None and split is None:
        usage("name the samples: --split train|test, --ids/--ids-file, or --forget-request ID")
    if not output.is_dir() and not output.parent.is_dir():
        usage(f"--output: folder {output.parent} does not exist")
    with connect(url, api_key) as api:
        created = api.logits(model, ids=chosen, split=split, forget_request_id=forget_request)
        job = follow(api, created.job_id, show=not as_json)
        path = api.download_artifact(job.id, ARTIFACT, output / ARTIFACT if output.is_dir() else output)
    result = job.result or {}
    if as_json:
        print_json({"job_id": job.id, "path": str(path), **result})
    else:
        typer.echo(
            f"{path}: logits of {result.get('n_samples')} samples x {result.get('n_outputs')} outputs "
            f"(sha256 {result.get('sha256')})"
        )
