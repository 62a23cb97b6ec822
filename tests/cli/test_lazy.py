"""cli.lazy changes when `lethe` does its work, never what it does: the same commands, values, errors and help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.core import TyperCommand
from typer.testing import CliRunner

from cli.lazy import Lazy, LazyGroup, defer_conversion
from cli.main import app
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "200"})

LISTED = [
    "epsilon",
    "unlearn",
    "evaluate",
    "study",
    "methods",
    "logits",
    "version",
    "migrate",
    "maintain",
    "up",
    "worker",
    "datasets",
    "tenants",
    "certificate",
    "jobs",
    "models",
    "webhooks",
    "keys",
]


def listed(help_text: str) -> list[str]:
    """The command names of a help screen's Commands panel, in order."""
    panel = help_text.split("Commands")[1]
    return re.findall(r"^│ (\w+) ", panel, flags=re.MULTILINE)


def test_help_lists_every_command_in_order_with_its_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert listed(result.output) == LISTED
    assert (
        "Epsilon-hat of unlearned vs reference logits (the study's forget-quality metric)." in result.output
    )
    assert "Jobs: list, show, wait for and cancel." in result.output
    assert "Bring the database schema to the newest migration" in result.output


def test_an_unknown_command_is_refused_with_a_suggestion():
    result = runner.invoke(app, ["jbos", "list"])
    assert result.exit_code == 2
    assert "No such command 'jbos'. Did you mean 'jobs'?" in result.output


def test_a_lazy_group_builds_a_command_once_when_it_is_looked_up():
    built: list[str] = []
    sub = typer.Typer(help="Sub.")

    @sub.command("leaf")
    def leaf() -> None:
        typer.echo("leaf ran")

    def hello(name: str = "world") -> None:
        """Say hello."""
        typer.echo(f"hello {name}")

    class Group(LazyGroup):
        lazy = {"hello": Lazy(hello), "sub": Lazy(sub)}

        def _build(self, name, entry):
            built.append(name)
            return super()._build(name, entry)

    demo = typer.Typer(cls=Group)
    demo.callback()(lambda: None)

    result = runner.invoke(demo, ["hello", "--name", "you"])
    assert (result.exit_code, result.output, built) == (0, "hello you\n", ["hello"])
    built.clear()
    result = runner.invoke(demo, ["sub", "leaf"])
    assert (result.exit_code, result.output, built) == (0, "leaf ran\n", ["sub"])
    built.clear()
    result = runner.invoke(demo, ["--help"])
    assert result.exit_code == 0 and listed(result.output) == ["hello", "sub"] and built == ["hello", "sub"]
    assert "Say hello." in result.output and "Sub." in result.output


def test_a_lazy_target_names_its_module_and_attribute():
    from cli.main import keys_app

    assert Lazy("cli.main:keys_app").resolve() is keys_app
    with pytest.raises(AttributeError):
        Lazy("cli.main:no_such_command").resolve()


class Deferring(TyperCommand):
    def parse_args(self, ctx, args):
        defer_conversion(self.get_params(ctx))
        return super().parse_args(ctx, args)


def run(cls: type[TyperCommand] | None, args: list[str]) -> tuple[int, str]:
    """A command with one parameter of each kind `lethe` uses, run with typer's conversion or a deferred one."""
    demo = typer.Typer()

    @demo.command(cls=cls)
    def show(
        text: Annotated[str, typer.Argument()],
        limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
        ratio: Annotated[float, typer.Option()] = 0.5,
        bounded: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.25,
        clamped: Annotated[int, typer.Option(min=1, max=9, clamp=True)] = 5,
        name: Annotated[str | None, typer.Option(envvar="DEMO_NAME")] = None,
        count: Annotated[int | None, typer.Option()] = None,
        items: Annotated[list[str] | None, typer.Option("--item")] = None,
        path: Annotated[Path | None, typer.Option()] = None,
        flag: Annotated[bool, typer.Option()] = False,
    ) -> None:
        values = (text, limit, ratio, bounded, clamped, name, count, items, path, flag)
        typer.echo(repr([(type(v).__name__, v) for v in values]))

    result = runner.invoke(demo, args, env={"DEMO_NAME": "from-env"} if "env" in args else {})
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["hello"],
        ["hello", "--limit", "7", "--ratio", "2", "--bounded", "1", "--clamped", "99"],
        ["hello", "--name", "x", "--count", "3", "--item", "a", "--item", "b", "--path", "/tmp/p", "--flag"],
        ["env"],
        ["hello", "--limit", "0"],
        ["hello", "--limit", "abc"],
        ["hello", "--limit", "2.5"],
        ["hello", "--ratio", "nan"],
        ["hello", "--bounded", "1.5"],
        ["hello", "--count", "x"],
        [],
    ],
)
def test_deferred_conversion_gives_typers_values_and_errors(args):
    assert run(Deferring, args) == run(None, args)


def test_deferred_conversion_builds_no_converter_for_values_that_need_none():
    demo = typer.Typer()
    seen: dict[str, object] = {}

    @demo.command(cls=Deferring)
    def show(
        ctx: typer.Context,
        text: str,
        limit: Annotated[int, typer.Option(min=1)] = 50,
        name: str | None = None,
    ) -> None:
        seen.update({p.name: type(p._runtime_param).__name__ for p in ctx.command.params})

    assert runner.invoke(demo, ["x"]).exit_code == 0
    assert set(seen.values()) == {"_Deferred"} and {"text", "limit", "name"} <= seen.keys()
    assert runner.invoke(demo, ["x", "--limit", "3"]).exit_code == 0
    assert seen["limit"] == "AdapterRuntimeParam" and seen["text"] == "_Deferred"


def test_help_rendered_lightly_still_renders_markdown_and_tracebacks():
    """Typer's markdown markup and rich tracebacks work after import_help_lightly; both modules import as usual."""
    probe = """
import sys
from cli.lazy import import_help_lightly
import_help_lightly()
left_out = [m for m in ("rich.markdown", "markdown_it", "rich.traceback", "attr") if m in sys.modules]
assert not left_out, left_out
import typer
from typer.testing import CliRunner
demo = typer.Typer(rich_markup_mode="markdown")
@demo.command()
def hello() -> None:
    '''Say **hello** in `code`.'''
demo.command()(lambda: None)
out = CliRunner(env={"COLUMNS": "100"}).invoke(demo, ["hello", "--help"]).output
assert "Say hello in code." in out and "**" not in out, out
import rich.markdown, rich.traceback, typer.rich_utils
assert "rich.markdown" in sys.modules and "markdown_it" in sys.modules
assert isinstance(typer.rich_utils.Markdown("x"), rich.markdown.Markdown)
try:
    1 / 0
except ZeroDivisionError as exc:
    tb = typer.rich_utils.Traceback.from_exception(type(exc), exc, exc.__traceback__)
assert isinstance(tb, rich.traceback.Traceback)
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
