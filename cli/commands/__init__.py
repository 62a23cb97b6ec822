"""`lethe` commands that talk to a running API through the client, one module per command group.

The server is LETHE_URL (or --url) and the key LETHE_API_KEY (or --api-key). Bad arguments print one
line starting with "error:" and exit with status 2; an error answered by the API exits with status 1.
Each module is imported when one of its commands runs (cli.lazy), and imports the client and rich inside
the commands that use them, so that starting costs little.
"""

from __future__ import annotations

from cli.commands.common import Command
from cli.lazy import Lazy

COMMANDS = {
    "unlearn": Lazy("cli.commands.unlearning:unlearn_command", cls=Command),
    "evaluate": Lazy("cli.commands.unlearning:evaluate_command", cls=Command),
    "study": Lazy("cli.commands.unlearning:study_command", cls=Command),
    "methods": Lazy("cli.commands.unlearning:methods_command", cls=Command),
    "logits": Lazy("cli.commands.logits:logits_command", cls=Command),
    "version": Lazy("cli.commands.version:version_command", cls=Command),
}
"""The API commands of the main `lethe` app, in the order its help lists them."""

GROUPS = {
    "jobs": Lazy("cli.commands.jobs:jobs_app"),
    "models": Lazy("cli.commands.models:models_app"),
    "webhooks": Lazy("cli.commands.webhooks:webhooks_app"),
}
"""The API command groups of the main `lethe` app."""
