"""`lethe datasets add/list` register a data set from its files, with clear errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from core.migrate import upgrade
from core.settings import get_settings
from tests.utils import configure

runner = CliRunner()


def test_add_then_list_on_the_embedded_default(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path)
    upgrade(get_settings().db_url)
    added = runner.invoke(app, ["datasets", "add", "mydigits", "--kind", "digits"])
    assert added.exit_code == 0, added.output
    assert "1438 train, 359 test" in added.output
    listed = runner.invoke(app, ["datasets", "list", "--json"])
    assert json.loads(listed.stdout) == [
        {
            "name": "mydigits",
            "kind": "digits",
            "n_train": 1438,
            "n_test": 359,
            "task": "classification",
            "root": None,
        }
    ]
    again = runner.invoke(app, ["datasets", "add", "mydigits", "--kind", "digits"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_bad_folder_or_option_is_one_clear_line(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path)
    upgrade(get_settings().db_url)
    missing = runner.invoke(
        app, ["datasets", "add", "c", "--kind", "cifar10", "--root", str(tmp_path / "nope")]
    )
    assert (
        missing.exit_code == 1 and missing.output.startswith("error:") and "Traceback" not in missing.output
    )
    bad = runner.invoke(app, ["datasets", "add", "d", "--kind", "digits", "--option", "novalue"])
    assert bad.exit_code == 2 and "key=value" in bad.output
    unknown = runner.invoke(app, ["datasets", "add", "d", "--kind", "mnist9"])
    assert unknown.exit_code == 1 and "unknown data set 'mnist9'" in unknown.output
