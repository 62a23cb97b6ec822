"""cli.lazy changes when `lethe` does its work, never what it does: the same commands, values, errors and help."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from cli.lazy import Lazy, LazyGroup
from cli.main import app

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
