"""`lethe` commands that talk to a running API through the client, one module per command group.

The server is LETHE_URL (or --url) and the key LETHE_API_KEY (or --api-key). Bad arguments print one
line starting with "error:" and exit with status 2; an error answered by the API exits with status 1.
Modules import the client and rich inside the commands that use them, so that starting costs little.
"""

from __future__ import annotations

import typer

from cli.commands.common import Command
from cli.commands.jobs import jobs_app
from cli.commands.logits import logits_command
from cli.commands.models import models_app
from cli.commands.unlearning import evaluate_command, methods_command, study_command, unlearn_command
from cli.commands.version import version_command
from cli.commands.webhooks import webhooks_app


def register(app: typer.Typer) -> None:
    """Add the API commands to the main `lethe` app."""
    app.command("unlearn", cls=Command)(unlearn_command)
    app.command("evaluate", cls=Command)(evaluate_command)
    app.command("study", cls=Command)(study_command)
    app.command("methods", cls=Command)(methods_command)
    app.command("logits", cls=Command)(logits_command)
    app.command("version", cls=Command)(version_command)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(models_app, name="models")
    app.add_typer(webhooks_app, name="webhooks")
