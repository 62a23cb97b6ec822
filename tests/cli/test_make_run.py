"""`make run` and `lethe up`: where they listen (arguments, LETHE_HOST / LETHE_PORT) and what they say first."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.utils import configure, reset_caches

REPO = Path(__file__).resolve().parents[2]


def _make_run(*args: str, **env: str) -> str:
    """The `lethe up` command line `make run` would run (make -n: nothing is run or installed)."""
    done = subprocess.run(
        ["make", "-n", "run", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return next(line for line in done.stdout.splitlines() if "lethe up" in line).rsplit("/", 1)[-1]


def test_make_run_passes_host_and_port_and_ignores_a_host_name_in_the_environment():
    assert _make_run("PORT=8001", HOST="build-box-7") == "lethe up --port 8001"
    assert _make_run("HOST=0.0.0.0", "PORT=8002") == "lethe up --host 0.0.0.0 --port 8002"
    assert _make_run(HOST="build-box-7") == "lethe up"  # lethe up then reads LETHE_HOST / LETHE_PORT


@pytest.fixture
def fake_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """`lethe up` with its migrations, worker and server replaced: what it would serve, and where."""
    import uvicorn

    import cli.main
    import core.maintenance

    configure(monkeypatch, home=tmp_path / "var")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    served: dict = {}
    monkeypatch.setattr(cli.main, "migrate", lambda **_kw: None)
    monkeypatch.setattr(core.maintenance, "requeue_orphans", lambda: [])
    monkeypatch.setattr(cli.main._Supervisor, "start", lambda self: None)
    monkeypatch.setattr(cli.main._Supervisor, "stop", lambda self: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **_kw: served.update(host=host, port=port))
    monkeypatch.setattr(signal, "signal", lambda *_a: None)  # leave this process's SIGTERM alone
    yield served
    reset_caches()


def test_lethe_up_reads_lethe_host_and_port_and_says_where_the_dashboard_is(fake_up, tmp_path):
    from cli.main import app

    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "api-key").write_text("lk_test\n")
    env = {"LETHE_HOST": "0.0.0.0", "LETHE_PORT": "8123"}
    result = CliRunner().invoke(app, ["up"], env=env)
    assert result.exit_code == 0, result.output
    assert fake_up == {"host": "0.0.0.0", "port": 8123}
    key = tmp_path / "var" / "api-key"
    assert f"dashboard at http://0.0.0.0:8123/ : sign in with the API key in {key}" in result.output


def test_without_a_key_file_lethe_up_says_how_to_make_a_key(fake_up):
    from cli.main import app

    result = CliRunner().invoke(app, ["up", "--port", "8124"])
    assert result.exit_code == 0, result.output
    assert fake_up == {"host": "127.0.0.1", "port": 8124}
    assert (
        "dashboard at http://127.0.0.1:8124/ : sign in with an API key (`lethe keys create" in result.output
    )
