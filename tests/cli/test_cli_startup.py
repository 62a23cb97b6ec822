"""`lethe` starts light: --help and simple commands import neither torch nor the server's code, and a command
imports only its own module, the client only when it talks to the API, pydantic only when it validates.

benchmarks/bench_cli.py measures the start; this keeps the imports that made it slow from coming back.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.client import serve
from tests.conftest import REPO

HEAVY = ("torch", "numpy", "scipy", "sqlalchemy", "celery", "fastapi", "api", "core", "ml", "worker")
CLIENT = ("client", "httpx", "pydantic")
HELP_UNUSED = ("rich.markdown", "markdown_it", "pygments", "rich.traceback", "attr")
"""What typer's help renderer imports for markup mode "markdown" and for pretty tracebacks (cli.lazy)."""
COMMAND_MODULES = (
    "cli.commands.jobs",
    "cli.commands.models",
    "cli.commands.unlearning",
    "cli.commands.logits",
    "cli.commands.webhooks",
    "cli.commands.version",
    "cli.epsilon",
    "cli.datasets",
    "cli.tenants",
    "cli.certificate",
)

PROBE = """
import json, sys
from cli.main import app
try:
    app(sys.argv[1:], prog_name="lethe")
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules, and their top-level packages, loaded by the time `lethe ARGS` has run, in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})},
        timeout=120,
    )
    line = next((line for line in proc.stderr.splitlines() if line.startswith("MODULES ")), None)
    assert line is not None, proc.stderr[-2000:]
    modules = set(json.loads(line.removeprefix("MODULES ")))
    return modules | {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(
    "args",
    [["--help"], [], ["jobs", "--help"], ["jobs", "list", "--help"], ["epsilon", "--help"], ["version"]],
)
def test_help_and_version_import_neither_torch_nor_the_client_nor_pydantic(args):
    loaded = imported(*args)
    assert "typer" in loaded
    unwanted = set(HEAVY + CLIENT + HELP_UNUSED + ("typer._adapters",))
    assert loaded.isdisjoint(unwanted), sorted(loaded & unwanted)


def test_help_lists_every_command_and_so_imports_them_all():
    loaded = imported("--help")
    assert set(COMMAND_MODULES) <= loaded, sorted(set(COMMAND_MODULES) - loaded)


def test_a_command_imports_its_own_module_and_no_other_command():
    loaded = imported("version")
    assert "cli.commands.version" in loaded
    others = set(COMMAND_MODULES) - {"cli.commands.version"}
    assert loaded.isdisjoint(others), sorted(loaded & others)


def test_jobs_list_imports_the_client_but_nothing_of_the_server_nor_of_other_commands():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def jobs(request):
        return JSONResponse({"data": [], "count": 0, "next_cursor": None})

    with serve(Starlette(routes=[Route("/jobs", jobs)])) as url:
        loaded = imported("jobs", "list", env={"LETHE_URL": url, "LETHE_API_KEY": "k"})
    assert {*CLIENT, "httpcore", "cli.commands.jobs"} <= loaded
    # httpcore's trio support, httpx's own command line, the asyncio client, typer's argument converters
    unused = ("trio", "click", "pygments", "asyncio", "client.aio", "typer._adapters")
    others = tuple(m for m in COMMAND_MODULES if m != "cli.commands.jobs")
    assert loaded.isdisjoint(HEAVY + unused + others), sorted(loaded & set(HEAVY + unused + others))


JOB = {
    "id": "0b9f7c1e-0000-4000-8000-000000000001",
    "kind": "unlearn",
    "status": "queued",
    "progress": 0.0,
    "progress_info": {},
    "error": None,
    "attempts": 0,
    "model_id": None,
    "forget_request_id": None,
    "result": None,
    "created_at": "2026-01-01T00:00:00Z",
    "started_at": None,
    "finished_at": None,
    "updated_at": "2026-01-01T00:00:00Z",
}

VALIDATORS_PROBE = """
import json, os, sys
from cli.main import app
try:
    app(sys.argv[1:], prog_name="lethe")
except SystemExit:
    pass
import client.client, client.models, pydantic.plugin._loader as loader
built = [n for n, c in vars(client.models).items() if getattr(c, "__pydantic_complete__", False)]
sys.stderr.write("\\nSTATE " + json.dumps({
    "models_built": built,
    "adapters": client.client._adapter.cache_info().currsize,
    "plugins_sought": loader._plugins is not None,
    "switch": os.environ.get("PYDANTIC_DISABLE_PLUGINS"),
}) + "\\n")
"""


def test_jobs_list_builds_one_validator_and_does_not_search_for_pydantic_plugins():
    """The job list's validator is the only one built (the client's models are built on first use), and
    pydantic's search of every installed distribution for plugins is skipped, for this command only."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def jobs(request):
        return JSONResponse({"data": [JOB], "count": 1, "next_cursor": None})

    with serve(Starlette(routes=[Route("/jobs", jobs)])) as url:
        proc = subprocess.run(
            [sys.executable, "-c", VALIDATORS_PROBE, "jobs", "list"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LETHE_URL": url, "LETHE_API_KEY": "k"},
            timeout=120,
        )
    assert JOB["id"] in proc.stdout, proc.stdout + proc.stderr[-2000:]
    line = next((line for line in proc.stderr.splitlines() if line.startswith("STATE ")), None)
    assert line is not None, proc.stderr[-2000:]
    state = json.loads(line.removeprefix("STATE "))
    assert state == {"models_built": [], "adapters": 1, "plugins_sought": False, "switch": None}


def test_the_plugin_switch_lasts_only_while_a_command_talks_to_the_api(monkeypatch):
    """Set while the block runs and removed after it; a value the user set is neither changed nor removed."""
    import os

    from cli.commands.api import PLUGINS_SWITCH, without_pydantic_plugins

    monkeypatch.delenv(PLUGINS_SWITCH, raising=False)
    with without_pydantic_plugins():
        assert os.environ[PLUGINS_SWITCH] == "__all__"
    assert PLUGINS_SWITCH not in os.environ
    with pytest.raises(RuntimeError), without_pydantic_plugins():
        raise RuntimeError("the command failed")
    assert PLUGINS_SWITCH not in os.environ

    monkeypatch.setenv(PLUGINS_SWITCH, "logfire")
    with without_pydantic_plugins():
        assert os.environ[PLUGINS_SWITCH] == "logfire"
    assert os.environ[PLUGINS_SWITCH] == "logfire"


def test_leaving_out_unused_modules_leaves_them_importable():
    """What the client's import leaves out stays importable, with httpx and httpcore working."""
    probe = (
        "import sys\n"
        "from cli.commands.api import import_client_lightly\n"
        "import_client_lightly()\n"
        "assert 'trio' not in sys.modules and 'httpx._main' not in sys.modules\n"
        "import httpx, trio, httpx._main\n"
        "assert httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204))).get('http://x').status_code == 204\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_client_for_plain_http_loads_no_certificates_and_refuses_https():
    import ssl

    from client.client import tls_settings

    plain = tls_settings("HTTP://127.0.0.1:8000")
    assert isinstance(plain, ssl.SSLContext)
    assert plain.cert_store_stats()["x509_ca"] == 0
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert tls_settings("https://lethe.example") is True
