"""`lethe version`: which release of lethe this command line is."""

from __future__ import annotations

import json

import typer

from cli.commands.common import AsJson


def version_command(as_json: AsJson = False) -> None:
    """Print the installed version of lethe."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("lethe")
    except PackageNotFoundError:
        installed = "unknown (not installed: run from a checkout)"
    typer.echo(json.dumps({"version": installed}) if as_json else f"lethe {installed}")
