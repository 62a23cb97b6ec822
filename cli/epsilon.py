"""`lethe epsilon`: epsilon-hat of unlearned vs reference models, from the study's folders or our own arrays.

    lethe epsilon --seed-dir DIR --approach NAME [--delta 0.05] [--json] [--plot FILE.png] [--bootstrap B]
    lethe epsilon --seed-dir DIR --all [--delta 0.05] [--json] [--plot FILE.png] [--bootstrap B]
    lethe epsilon --retain R.npy --unlearn U.npy --labels L.npy [--delta 0.05] [--json] [--plot FILE.png]

R and U are logits [models, samples, classes] of the reference and unlearned models, L the true classes
[samples]. Beside the study's epsilon-hat every result states its resolution (the ceiling its group sizes
allow, the samples at it, whether the figure is censored, in words), the bootstrap interval over models
and the smooth estimate (ml.metrics.resolution). Bad arguments print one line starting with "error:" and
exit with status 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from cli.commands.output import console

if TYPE_CHECKING:
    import numpy as np

    from ml.metrics.epsilon import EpsilonResult
    from ml.metrics.resolution import Resolution

# numpy, scipy and ml/ are imported when the command runs, not when `lethe` starts.
DEFAULT_DELTA = 0.05
"""ml.metrics.epsilon.DEFAULT_DELTA (the study's delta), repeated so that `lethe --help` does not import ml/."""
EXIT_BAD_ARGUMENTS = 2
_OWN_FLAGS = ("--retain", "--unlearn", "--labels")


def epsilon_command(
    seed_dir: Annotated[
        Path | None, typer.Option("--seed-dir", help="folder in the study's layout (logits_retain.npy, ...)")
    ] = None,
    approach: Annotated[
        str | None, typer.Option("--approach", help="approach folder in --seed-dir, or baseline")
    ] = None,
    all_approaches: Annotated[
        bool, typer.Option("--all", help="a table of every approach in --seed-dir")
    ] = False,
    retain: Annotated[
        Path | None,
        typer.Option("--retain", help="reference models' logits .npy, shape (models, samples, classes)"),
    ] = None,
    unlearn: Annotated[
        Path | None,
        typer.Option("--unlearn", help="unlearned models' logits .npy, shape (models, samples, classes)"),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="true classes .npy, shape (samples,)")
    ] = None,
    delta: Annotated[
        float, typer.Option("--delta", help="delta of (epsilon, delta), in [0, 1)")
    ] = DEFAULT_DELTA,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="write the epsilon-hat-over-delta curve to this PNG file")
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option(
            "--bootstrap",
            help="replicates of the bootstrap over models (default 1000, fewer for large inputs)",
        ),
    ] = None,
) -> None:
    """Epsilon-hat of unlearned vs reference logits, so an unlearning run can be judged against retraining."""
    from ml.metrics.epsilon import epsilon_hat
    from ml.metrics.seed_layout import SeedLayoutError, list_approaches, load_approach

    if not 0 <= delta < 1:
        _fail(f"--delta must lie in [0, 1), got {delta}")
    if bootstrap is not None and bootstrap < 1:
        _fail(f"--bootstrap must be at least 1, got {bootstrap}")
    if plot is not None and not plot.parent.is_dir():
        _fail(f"--plot: folder {plot.parent} does not exist")
    own = [retain, unlearn, labels]
    try:
        if seed_dir is not None:
            if any(p is not None for p in own):
                _fail("use either --seed-dir or --retain/--unlearn/--labels, not both")
            if all_approaches == (approach is not None):
                _fail("--seed-dir needs exactly one of --approach NAME or --all")
            if not seed_dir.is_dir():
                _fail(f"--seed-dir: {seed_dir} is not a folder")
            names = list_approaches(seed_dir) if all_approaches else [str(approach)]
            if not names:
                _fail(f"--seed-dir: no approaches in {seed_dir}")
            results, accuracies, resolutions = {}, {}, {}
            for name in names:
                data = load_approach(seed_dir, name)
                results[name] = epsilon_hat(
                    data.reference_logits, data.unlearned_logits, data.labels, delta=delta
                )
                resolutions[name] = _resolution(
                    results[name], data.reference_logits, data.unlearned_logits, data.labels, bootstrap
                )
                accuracies[name] = data.unlearned_accuracy.means() if data.unlearned_accuracy else {}
        else:
            if approach is not None or all_approaches:
                _fail("--approach and --all need --seed-dir")
            if any(p is None for p in own):
                _fail("give --seed-dir DIR, or all three of --retain, --unlearn and --labels")
            reference, unlearned, classes = (
                _load_array(flag, p) for flag, p in zip(_OWN_FLAGS, own, strict=True)
            )
            results = {"logits": epsilon_hat(reference, unlearned, classes, delta=delta)}
            resolutions = {"logits": _resolution(results["logits"], reference, unlearned, classes, bootstrap)}
            accuracies = {}
    except (SeedLayoutError, ValueError, OSError) as exc:
        _fail(str(exc))

    if plot is not None:
        from ml.plots import epsilon_curve_png

        epsilon_curve_png(results, plot)
        typer.echo(f"plot written to {plot}", err=True)
    if all_approaches:
        _print_table(results, resolutions, accuracies, as_json, delta)
    else:
        name = next(iter(results))
        _print_one(name, results[name], resolutions[name], as_json)


def _resolution(
    result: EpsilonResult,
    reference: np.ndarray,
    unlearned: np.ndarray,
    labels: np.ndarray,
    n_boot: int | None,
) -> Resolution:
    """The resolution, model-draw interval and smooth estimate of one result, from the same logits."""
    from ml.metrics.epsilon import hinge_statistic
    from ml.metrics.resolution import resolution

    return resolution(
        result, hinge_statistic(reference, labels), hinge_statistic(unlearned, labels), n_boot=n_boot
    )


def _fail(message: str) -> NoReturn:
    """One clear line on stderr and status 2, never a traceback."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=EXIT_BAD_ARGUMENTS)


def _load_array(flag: str, path: Path) -> np.ndarray:
    """A .npy array given on the command line, with the flag named in any error."""
    if not path.is_file():
        raise ValueError(f"{flag}: {path} does not exist")
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{flag}: {path} is not a readable .npy array ({exc})") from exc


def _number(value: float) -> str:
    """Three decimals, or inf/nan."""
    return f"{value:.3f}" if math.isfinite(value) else str(value)


def _interval(res: Resolution) -> str:
    """The bootstrap interval over models as [low, high]."""
    return f"[{_number(res.interval.low)}, {_number(res.interval.high)}]"


def _print_one(name: str, result: EpsilonResult, res: Resolution, as_json: bool) -> None:
    """One result as JSON or as a two-column table followed by the resolution in words."""
    if as_json:
        typer.echo(json.dumps(result.to_json() | res.to_json()))
        return
    from rich.table import Table

    table = Table(title=f"epsilon-hat: {name}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        (f"epsilon-hat (delta {result.delta:g})", _number(result.epsilon_hat)),
        ("95% interval over models (bootstrap)", _interval(res)),
        ("smooth estimate (Gaussian LR test)", _number(res.smooth)),
        ("ceiling at these group sizes", _number(result.epsilon_ceiling)),
        ("samples at the ceiling", str(result.n_at_ceiling)),
        ("mean", _number(result.mean)),
        ("per-sample 95% half-width", _number(result.ci95)),
        ("samples", str(result.n_samples)),
        ("reference models", str(result.n_reference)),
        ("unlearned models", str(result.n_unlearned)),
        ("infinite samples", str(result.n_infinite)),
        ("undefined (NaN) samples", str(result.n_nan)),
    ]
    for row in rows:
        table.add_row(*row)
    console().print(table)
    typer.echo(res.note())


def _print_table(
    results: dict[str, EpsilonResult],
    resolutions: dict[str, Resolution],
    accuracies: dict[str, dict[str, float]],
    as_json: bool,
    delta: float,
) -> None:
    """Every approach as JSON or as a table like the study's Table 1, censored figures named below it."""
    if as_json:
        typer.echo(
            json.dumps(
                {
                    name: result.to_json() | resolutions[name].to_json() | accuracies[name]
                    for name, result in results.items()
                }
            )
        )
        return
    from rich.table import Table

    table = Table(title=f"epsilon-hat at delta {delta:g}; mean accuracies of the unlearned models")
    headers = (
        "approach",
        "epsilon-hat",
        "95% over models",
        "ceiling",
        "at ceiling",
        "infinite",
        "smooth",
        "retain acc",
        "forget acc",
        "test acc",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "approach" else "right", overflow="fold")
    for name, result in results.items():
        acc = accuracies[name]
        res = resolutions[name]
        table.add_row(
            name,
            _number(result.epsilon_hat) + (" (censored)" if result.censored else ""),
            _interval(res),
            _number(result.epsilon_ceiling),
            str(result.n_at_ceiling),
            str(result.n_infinite),
            _number(res.smooth),
            *(
                f"{acc[k]:.4f}" if k in acc else "-"
                for k in ("retain_accuracy", "forget_accuracy", "test_accuracy")
            ),
        )
    console().print(table)
    for name, res in resolutions.items():
        if res.censored:
            typer.echo(f"{name}: {res.note()}")
