"""What every `lethe` command that talks to the API shares: exit codes, one-line usage errors, options.

Nothing here imports the client, rich or the server: `lethe --help` and every command's start pay only for
typer (see benchmarks/bench_cli.py); each command imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from cli.lazy import defer_conversion, import_help_lightly

DEFAULT_URL = "http://127.0.0.1:8000"
"""client.DEFAULT_URL, repeated so that defining the options does not import the client."""

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
    """Usage errors (missing argument, bad option value) as one "error:" line instead of a usage box.

    Values are converted only when they need it, and help is rendered without what it never uses (cli.lazy).
    """

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        defer_conversion(self.get_params(ctx))  # type: ignore[attr-defined]
        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except _UsageError as exc:
            one_line(exc)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        import_help_lightly()
        super().format_help(ctx, formatter)  # type: ignore[misc]


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
JobRef = Annotated[
    str,
    typer.Argument(
        metavar="ID",
        help="job id, or its first 8 or more characters when they are unique",
        show_default=False,
    ),
]
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
Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="follow the job until it finishes: a progress bar on a terminal, progress lines elsewhere",
    ),
]
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
